/* My account (any role): who I am, and a password change (POST /api/auth/password; the current password is
   asked again, the new one twice, at least 12 characters; my other sessions end). */
"use strict";

Edge.addStrings({
  en: {
    acc_page: "My account", acc_user: "User name", acc_role: "Role", acc_title: "Change my password",
    acc_current: "Current password", acc_new: "New password", acc_new2: "New password again", acc_change: "Change password",
    acc_changed: "Password changed; your other sessions were ended.", acc_mismatch: "The two passwords differ.",
    acc_short: "A password needs at least 12 characters.",
    acc_rules: "At least 12 characters (at most 1,024), with at least 4 different ones; not one of the most common " +
      "passwords, and not containing your user name.", role_staff: "staff", role_technician: "technician", role_admin: "admin",
  },
  "zh-CN": {
    acc_page: "我的账户", acc_user: "用户名", acc_role: "角色", acc_title: "修改我的密码", acc_current: "当前密码",
    acc_new: "新密码", acc_new2: "再次输入新密码", acc_change: "修改密码", acc_changed: "密码已修改；你的其他会话已结束。",
    acc_mismatch: "两次输入的密码不一致。", acc_short: "密码至少需要 12 个字符。",
    acc_rules: "至少 12 个字符（最多 1024 个），其中至少 4 个不同的字符；不能是最常见的密码，也不能包含你的用户名。", role_staff: "店员", role_technician: "技术员",
    role_admin: "管理员",
  },
});

Edge.page(async (app, me) => {
  const { el, t } = Edge;
  const field = (id, autocomplete) => el("input", { type: "password", id, autocomplete, required: true, maxlength: 1024 });
  const current = field("acc-current", "current-password");
  const next = field("acc-password", "new-password");
  const again = field("acc-password2", "new-password");
  const form = el("form", { class: "stack", id: "acc-form", onsubmit: async (ev) => {
    ev.preventDefault();
    if (next.value !== again.value) { Edge.flash(t("acc_mismatch"), true); return; }
    if ([...next.value].length < 12) { Edge.flash(t("acc_short"), true); return; }
    try {
      await Edge.api("POST", "/api/auth/password", { current: current.value, new: next.value });
      form.reset();
      Edge.flash(t("acc_changed"));
    } catch (e) { Edge.flash(e.message, true); }
  } },
  el("label", {}, t("acc_current"), current), el("label", {}, t("acc_new"), next), el("label", {}, t("acc_new2"), again),
  el("p", { class: "muted", id: "acc-rules" }, t("acc_rules")),
  el("div", {}, el("button", { class: "action", type: "submit" }, t("acc_change"))));
  app.append(
    el("h1", {}, t("acc_page")),
    el("section", { class: "card" }, el("dl", { class: "kv" },
      el("dt", {}, t("acc_user")), el("dd", { id: "acc-username" }, me.username),
      el("dt", {}, t("acc_role")), el("dd", {}, t("role_" + me.role)))),
    el("section", { class: "card", id: "acc-section" }, el("h2", {}, t("acc_title")), form),
  );
});
