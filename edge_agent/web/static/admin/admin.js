/* The technician web UI's shared script: the session, the JSON API with its CSRF header, the navigation,
   translations, a DOM builder that never parses HTML (no innerHTML: a product name is never markup), and
   the live stream. Each page's own script calls Edge.page(async (app, me) => { ... }). */
"use strict";

(function () {
  const PAGES = [
    { path: "/", key: "nav_dashboard", role: "staff" },
    { path: "/ui/devices", key: "nav_devices", role: "technician" },
    { path: "/ui/discovery", key: "nav_discovery", role: "technician" },
    { path: "/ui/pairing", key: "nav_pairing", role: "technician" },
    { path: "/ui/lockers", key: "nav_lockers", role: "staff" },
    { path: "/ui/picking", key: "nav_picking", role: "staff" },
    { path: "/ui/shelves", key: "nav_shelves", role: "staff" },
    { path: "/ui/events", key: "nav_events", role: "technician" },
    { path: "/ui/config", key: "nav_config", role: "admin" },
    { path: "/ui/users", key: "nav_users", role: "admin" },
  ];
  const RANK = { staff: 1, technician: 2, admin: 3 };
  const STRINGS = {
    en: {
      brand: "Store Edge Agent", sign_out: "Sign out", nav_dashboard: "Dashboard", nav_devices: "Devices",
      nav_discovery: "Discovery", nav_pairing: "Pairing", nav_lockers: "Lockers", nav_events: "Events & audit",
      nav_config: "Configuration", nav_users: "Users", online: "online", offline: "offline", never: "never",
      seconds_ago: "{n} s ago", minutes_ago: "{n} min ago", hours_ago: "{n} h ago", days_ago: "{n} d ago",
      error: "Error", saved: "Saved", loading: "Loading…", none: "none", yes: "yes", no: "no",
      nav_picking: "Picking", nav_shelves: "Pickup shelves",
    },
    "zh-CN": {
      brand: "门店边缘代理", sign_out: "退出", nav_dashboard: "总览", nav_devices: "设备", nav_discovery: "发现",
      nav_pairing: "绑定", nav_lockers: "储物柜", nav_events: "事件与审计", nav_config: "配置", nav_users: "用户",
      online: "在线", offline: "离线", never: "从未", seconds_ago: "{n} 秒前", minutes_ago: "{n} 分钟前",
      hours_ago: "{n} 小时前", days_ago: "{n} 天前", error: "错误", saved: "已保存", loading: "加载中…",
      none: "无", yes: "是", no: "否", nav_picking: "拣货", nav_shelves: "取货架",
    },
  };

  const Edge = {
    me: null,
    lang: "en",
    csrf: null,

    addStrings(dicts) {
      for (const [lang, dict] of Object.entries(dicts)) Object.assign(STRINGS[lang] || (STRINGS[lang] = {}), dict);
    },

    t(key, vars) {
      const text = (STRINGS[Edge.lang] && STRINGS[Edge.lang][key]) || STRINGS.en[key] || key;
      return vars ? text.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m)) : text;
    },

    applyStrings(root) {
      for (const node of (root || document).querySelectorAll("[data-i18n]")) node.textContent = Edge.t(node.dataset.i18n);
    },

    /* el("button", {class: "action", onclick: f}, "text", child) */
    el(tag, props, ...children) {
      const node = document.createElement(tag);
      for (const [key, value] of Object.entries(props || {})) {
        if (value === null || value === undefined || value === false) continue;
        if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
        else if (key === "class") node.className = value;
        else if (key === "dataset") Object.assign(node.dataset, value);
        else if (key === "text") node.textContent = value;
        else if (value === true) node.setAttribute(key, "");
        else node.setAttribute(key, String(value));
      }
      for (const child of children.flat()) {
        if (child === null || child === undefined || child === false) continue;
        node.append(child instanceof Node ? child : document.createTextNode(String(child)));
      }
      return node;
    },

    async api(method, path, body, options) {
      const opts = options || {};
      const headers = { Accept: "application/json" };
      if (method !== "GET" && method !== "HEAD" && Edge.csrf) headers["X-CSRF-Token"] = Edge.csrf;
      let payload;
      if (body instanceof FormData || typeof body === "string" || body instanceof Blob) {
        payload = body;
        if (typeof body === "string") headers["Content-Type"] = opts.contentType || "text/plain; charset=utf-8";
      } else if (body !== undefined) {
        payload = JSON.stringify(body);
        headers["Content-Type"] = "application/json";
      }
      const response = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
      if (response.status === 401 && !opts.noRedirect) {
        location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
        throw new Error("not signed in");
      }
      if (opts.raw) return response;
      const type = response.headers.get("content-type") || "";
      const data = type.includes("json") ? await response.json() : await response.text();
      if (!response.ok) {
        const detail = data && data.detail !== undefined ? data.detail : data;
        const message = (detail && (detail.message || detail.error)) || (typeof detail === "string" ? detail : JSON.stringify(detail));
        const error = new Error(message || response.statusText);
        error.status = response.status;
        error.body = data;
        throw error;
      }
      return data;
    },

    flash(message, isError) {
      const box = document.getElementById("flash");
      if (!box) return;
      box.textContent = message;
      box.classList.toggle("error", Boolean(isError));
      box.hidden = false;
      clearTimeout(Edge._flashTimer);
      Edge._flashTimer = setTimeout(() => { box.hidden = true; }, isError ? 8000 : 3000);
    },

    ago(ms) {
      if (ms === null || ms === undefined) return Edge.t("never");
      const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
      if (s < 90) return Edge.t("seconds_ago", { n: s });
      if (s < 5400) return Edge.t("minutes_ago", { n: Math.round(s / 60) });
      if (s < 172800) return Edge.t("hours_ago", { n: Math.round(s / 3600) });
      return Edge.t("days_ago", { n: Math.round(s / 86400) });
    },

    time(ms) {
      return ms === null || ms === undefined ? "" : new Date(ms).toLocaleString(Edge.lang);
    },

    badge(text, kind) {
      return Edge.el("span", { class: "badge " + (kind || "") }, text);
    },

    can(role) {
      return Edge.me !== null && RANK[Edge.me.role] >= RANK[role];
    },

    /* The agent's live stream (/api/live, server-sent events): handler(type, data). Reconnects by itself. */
    live(handler) {
      const source = new EventSource("/api/live");
      source.onmessage = (event) => {
        try { handler("message", JSON.parse(event.data)); } catch (e) { console.error(e); }
      };
      for (const type of ["dashboard", "device", "alarm", "progress", "compartment", "picking", "shelf", "ping"]) {
        source.addEventListener(type, (event) => {
          try { handler(type, JSON.parse(event.data)); } catch (e) { console.error(e); }
        });
      }
      // EventSource retries by itself forever, also after the session ended (a 401 it cannot see). On an error,
      // ask who is signed in: Edge.api sends a signed-out browser to the sign-in page.
      source.onerror = () => {
        Edge.api("GET", "/api/auth/me").catch(() => source.close());
      };
      return source;
    },

    setLang(lang) {
      Edge.lang = STRINGS[lang] ? lang : "en";
      localStorage.setItem("edge-lang", Edge.lang);
      document.documentElement.lang = Edge.lang;
      const button = document.getElementById("lang-button");
      if (button) button.textContent = Edge.lang === "en" ? "中文" : "English";
    },

    async page(render) {
      await new Promise((resolve) => (document.readyState === "loading" ? document.addEventListener("DOMContentLoaded", resolve) : resolve()));
      Edge.setLang(localStorage.getItem("edge-lang") || (navigator.language.startsWith("zh") ? "zh-CN" : "en"));
      const app = document.getElementById("app");
      try {
        const me = await Edge.api("GET", "/api/auth/me");
        Edge.me = me;
        Edge.csrf = me.csrf;
        if (me.lang && !localStorage.getItem("edge-lang")) Edge.setLang(me.lang);
      } catch (e) {
        return;
      }
      Edge._chrome();
      const rerender = async () => {
        Edge.applyStrings(document);
        Edge._nav();
        app.replaceChildren();
        try { await render(app, Edge.me); } catch (e) { console.error(e); Edge.flash(e.message, true); }
      };
      document.getElementById("lang-button").addEventListener("click", () => {
        Edge.setLang(Edge.lang === "en" ? "zh-CN" : "en");
        rerender();
      });
      await rerender();
      document.body.dataset.ready = "1";
    },

    _chrome() {
      const who = document.getElementById("who");
      who.textContent = Edge.me.username + " · " + Edge.me.role;
      const out = document.getElementById("sign-out");
      out.hidden = false;
      out.addEventListener("click", async () => {
        try { await Edge.api("POST", "/api/auth/logout", {}); } finally { location.assign("/login"); }
      });
    },

    _nav() {
      const nav = document.getElementById("nav");
      nav.replaceChildren(...PAGES.filter((p) => Edge.can(p.role)).map((p) =>
        Edge.el("a", { href: p.path, "aria-current": location.pathname === p.path ? "page" : null }, Edge.t(p.key))));
    },
  };

  window.Edge = Edge;
})();
