/* Sign-in and first-run setup: the two pages a browser sees without a session. */
"use strict";

(function () {
  const { el, t } = Edge;
  Edge.addStrings({
    en: {
      sign_in: "Sign in", username: "User name", password: "Password", wrong: "Wrong user name or password.",
      locked: "Too many failed attempts. Try again in {n} s.", setup_title: "First-run setup",
      setup_intro: "No account exists yet. Enter the one-time setup token the agent printed when it started " +
        "(run `edge-agent setup-token` on the box to see it again) and create the first administrator.",
      setup_token: "Setup token", password_again: "Password again", create_admin: "Create administrator",
      mismatch: "The two passwords differ.", password_rules: "At least 12 characters (at most 1,024), with at least 4 different ones; not one " +
        "of the most common passwords, and not containing the user name.",
    },
    "zh-CN": {
      sign_in: "登录", username: "用户名", password: "密码", wrong: "用户名或密码错误。",
      locked: "失败次数过多，请 {n} 秒后再试。", setup_title: "首次设置",
      setup_intro: "尚无账户。请输入代理启动时打印的一次性设置令牌（在设备上运行 `edge-agent setup-token` 可再次查看），并创建第一个管理员。",
      setup_token: "设置令牌", password_again: "再次输入密码", create_admin: "创建管理员",
      mismatch: "两次输入的密码不一致。", password_rules: "至少 12 个字符（最多 1024 个），其中至少 4 个不同的字符；不能是最常见的密码，也不能包含用户名。",
    },
  });

  function nextTarget() {
    const next = new URLSearchParams(location.search).get("next") || "/";
    // Only a path on this site: "//evil.example" or "https://..." would make the sign-in page an open redirect.
    return next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\") ? next : "/";
  }

  function field(name, label, type, extra) {
    return el("label", {}, label, el("input", Object.assign({ name, id: name, type, required: true }, extra || {})));
  }

  function renderLogin(app) {
    const message = el("p", { class: "error-text", id: "message", role: "alert" });
    const form = el("form", { class: "stack", id: "login-form" },
      field("username", t("username"), "text", { autocomplete: "username", autofocus: true, autocapitalize: "none" }),
      field("password", t("password"), "password", { autocomplete: "current-password" }),
      el("button", { class: "action", type: "submit", id: "sign-in" }, t("sign_in")),
      message);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      message.textContent = "";
      const body = { username: form.username.value.trim(), password: form.password.value };
      try {
        await Edge.api("POST", "/api/auth/login", body, { noRedirect: true });
        location.assign(nextTarget());
      } catch (e) {
        const left = e.body && e.body.detail && e.body.detail.retry_after_s;
        message.textContent = e.status === 429 ? t("locked", { n: left || "?" }) : e.status === 401 ? t("wrong") : e.message;
        form.password.value = "";
      }
    });
    app.append(el("section", { class: "card center-card" }, el("h1", {}, t("sign_in")), form));
  }

  function renderSetup(app) {
    const message = el("p", { class: "error-text", id: "message", role: "alert" });
    const form = el("form", { class: "stack", id: "setup-form" },
      el("p", { class: "muted" }, t("setup_intro")),
      field("token", t("setup_token"), "text", { autocomplete: "off", autofocus: true, spellcheck: "false" }),
      field("username", t("username"), "text", { autocomplete: "username", autocapitalize: "none" }),
      field("password", t("password"), "password", { autocomplete: "new-password", minlength: 12 }),
      field("password2", t("password_again"), "password", { autocomplete: "new-password", minlength: 12 }),
      // Every rule edge_agent/services/web_users.check_password enforces (tests/test_signin_ui.py holds them together).
      el("p", { class: "muted", id: "password-rules" }, t("password_rules")),
      el("button", { class: "action", type: "submit", id: "create-admin" }, t("create_admin")),
      message);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      message.textContent = "";
      if (form.password.value !== form.password2.value) { message.textContent = t("mismatch"); return; }
      try {
        await Edge.api("POST", "/api/auth/setup", {
          token: form.token.value.trim(), username: form.username.value.trim(), password: form.password.value,
          lang: Edge.lang,
        }, { noRedirect: true });
        location.assign("/");
      } catch (e) {
        message.textContent = e.message;
      }
    });
    app.append(el("section", { class: "card center-card" }, el("h1", {}, t("setup_title")), form));
  }

  async function start() {
    Edge.setLang(localStorage.getItem("edge-lang") || (navigator.language.startsWith("zh") ? "zh-CN" : "en"));
    const app = document.getElementById("app");
    const page = document.body.dataset.page;
    const state = await Edge.api("GET", "/api/auth/state", undefined, { noRedirect: true });
    if (page === "login" && state.setup_needed) { location.replace("/setup"); return; }
    if (page === "setup" && !state.setup_needed) { location.replace("/login"); return; }
    const render = () => {
      Edge.applyStrings(document);
      app.replaceChildren();
      (page === "setup" ? renderSetup : renderLogin)(app);
    };
    document.getElementById("lang-button").addEventListener("click", () => {
      Edge.setLang(Edge.lang === "en" ? "zh-CN" : "en");
      render();
    });
    render();
    document.body.dataset.ready = "1";
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
