/* Users (admin): the web UI's accounts over /api/users: list, add (password twice, at least 12 characters),
   change a role, reset a password, remove (never yourself); and the admin's own password change. A changed
   role or password ends that user's sessions (they sign in again). */
"use strict";

Edge.addStrings({
  en: {
    us_title: "Users", us_user: "User name", us_role: "Role", us_created: "Created", us_last: "Last sign-in",
    us_actions: "Actions", us_add: "Add user", us_password: "Password", us_password2: "Password again",
    us_reset: "Reset password", us_remove: "Remove", us_you: "you", us_added: "User {u} added.",
    us_removed: "User {u} removed.", us_role_changed: "{u} is now {role}; their sessions were ended.",
    us_reset_done: "Password of {u} reset; their sessions were ended.", us_confirm_remove: "Remove user {u}?",
    us_mismatch: "The two passwords differ.", us_short: "A password needs at least 12 characters.",
    us_set: "Set", us_cancel: "Cancel", role_staff: "staff", role_technician: "technician", role_admin: "admin",
    us_roles_note: "Staff: lockers, alarms, dashboard. Technician: also devices, pairing, tests, events. Admin: also users and configuration.",
    acc_title: "Change my password", acc_current: "Current password", acc_new: "New password", acc_new2: "New password again",
    acc_change: "Change password", acc_changed: "Password changed; your other sessions were ended.",
  },
  "zh-CN": {
    us_title: "用户", us_user: "用户名", us_role: "角色", us_created: "创建时间", us_last: "最近登录", us_actions: "操作",
    us_add: "添加用户", us_password: "密码", us_password2: "再次输入密码", us_reset: "重置密码", us_remove: "删除",
    us_you: "你", us_added: "已添加用户 {u}。", us_removed: "已删除用户 {u}。", us_role_changed: "{u} 的角色已改为 {role}；其会话已结束。",
    us_reset_done: "已重置 {u} 的密码；其会话已结束。", us_confirm_remove: "删除用户 {u}？", us_mismatch: "两次输入的密码不一致。",
    us_short: "密码至少需要 12 个字符。", us_set: "设置", us_cancel: "取消", role_staff: "店员", role_technician: "技术员",
    role_admin: "管理员", us_roles_note: "店员：储物柜、告警、总览。技术员：另加设备、绑定、测试、事件。管理员：另加用户和配置。",
    acc_title: "修改我的密码", acc_current: "当前密码", acc_new: "新密码", acc_new2: "再次输入新密码", acc_change: "修改密码",
    acc_changed: "密码已修改；你的其他会话已结束。",
  },
});

const ROLES = ["staff", "technician", "admin"];

/* Two password fields that must match and be long enough; returns [fields, value() or null with a flash]. */
function passwordPair(prefix, labelKey, againKey) {
  const { el, t } = Edge;
  const first = el("input", { type: "password", id: prefix + "-password", autocomplete: "new-password", minlength: 12, maxlength: 1024, required: true });
  const second = el("input", { type: "password", id: prefix + "-password2", autocomplete: "new-password", minlength: 12, maxlength: 1024, required: true });
  const value = () => {
    if (first.value !== second.value) { Edge.flash(t("us_mismatch"), true); return null; }
    if ([...first.value].length < 12) { Edge.flash(t("us_short"), true); return null; }
    return first.value;
  };
  return [[el("label", {}, t(labelKey), first), el("label", {}, t(againKey), second)], value];
}

function ownPasswordForm() {
  const { el, t } = Edge;
  const current = el("input", { type: "password", id: "acc-current", autocomplete: "current-password", required: true, maxlength: 1024 });
  const [fields, value] = passwordPair("acc", "acc_new", "acc_new2");
  const form = el("form", { class: "stack", id: "acc-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const next = value();
    if (next === null) return;
    try {
      await Edge.api("POST", "/api/auth/password", { current: current.value, new: next });
      form.reset();
      Edge.flash(t("acc_changed"));
    } catch (e) { Edge.flash(e.message, true); }
  } }, el("label", {}, t("acc_current"), current), fields, el("div", {}, el("button", { class: "action", type: "submit" }, t("acc_change"))));
  return el("section", { class: "card", id: "acc-section" }, el("h2", {}, t("acc_title")), form);
}

Edge.page(async (app, me) => {
  const { el, t } = Edge;
  app.append(el("h1", {}, t("us_title")));
  const listBox = el("div", { id: "us-list" });

  const roleSelect = (value, attrs) => el("select", attrs || {}, ROLES.map((r) => el("option", { value: r, selected: r === value }, t("role_" + r))));

  const load = async () => {
    const { users } = await Edge.api("GET", "/api/users");
    listBox.replaceChildren(el("div", { class: "table-wrap" }, el("table", { id: "us-table" },
      el("thead", {}, el("tr", {}, el("th", {}, t("us_user")), el("th", {}, t("us_role")), el("th", {}, t("us_last")),
        el("th", {}, t("us_created")), el("th", {}, t("us_actions")))),
      el("tbody", {}, users.map((u) => row(u))))));
  };

  const row = (u) => {
    const self = u.username === me.username;
    const select = roleSelect(u.role, { "aria-label": t("us_role"), disabled: self, dataset: { user: u.username } });
    select.addEventListener("change", async () => {
      try {
        await Edge.api("PATCH", "/api/users/" + encodeURIComponent(u.username), { role: select.value });
        Edge.flash(t("us_role_changed", { u: u.username, role: t("role_" + select.value) }));
      } catch (e) { select.value = u.role; Edge.flash(e.message, true); }
    });
    const resetBox = el("div", {});
    const openReset = () => {
      const [fields, value] = passwordPair("reset-" + u.username, "us_password", "us_password2");
      resetBox.replaceChildren(el("form", { class: "stack", onsubmit: async (ev) => {
        ev.preventDefault();
        const password = value();
        if (password === null) return;
        try {
          await Edge.api("PATCH", "/api/users/" + encodeURIComponent(u.username), { password });
          resetBox.replaceChildren();
          Edge.flash(t("us_reset_done", { u: u.username }));
        } catch (e) { Edge.flash(e.message, true); }
      } }, fields, el("div", { class: "actions" }, el("button", { class: "action", type: "submit" }, t("us_set")),
        el("button", { class: "action secondary", type: "button", onclick: () => resetBox.replaceChildren() }, t("us_cancel")))));
    };
    const remove = async () => {
      if (!confirm(t("us_confirm_remove", { u: u.username }))) return;
      try {
        await Edge.api("DELETE", "/api/users/" + encodeURIComponent(u.username));
        Edge.flash(t("us_removed", { u: u.username }));
        await load();
      } catch (e) { Edge.flash(e.message, true); }
    };
    return el("tr", { dataset: { user: u.username } },
      el("td", {}, u.username, self ? el("span", { class: "muted" }, " (" + t("us_you") + ")") : null),
      el("td", {}, select),
      el("td", {}, Edge.ago(u.last_sign_in_ms)),
      el("td", {}, Edge.time(u.created_ms)),
      el("td", {}, el("div", { class: "actions" },
        self ? null : el("button", { class: "action secondary", type: "button", onclick: openReset }, t("us_reset")),
        self ? null : el("button", { class: "action danger", type: "button", onclick: remove }, t("us_remove"))), resetBox));
  };

  const name = el("input", { id: "us-new-name", required: true, maxlength: 64, autocomplete: "off" });
  const newRole = roleSelect("staff", { id: "us-new-role" });
  const [fields, value] = passwordPair("us-new", "us_password", "us_password2");
  const addForm = el("form", { class: "stack", id: "us-add", onsubmit: async (ev) => {
    ev.preventDefault();
    const password = value();
    if (password === null) return;
    try {
      const user = await Edge.api("POST", "/api/users", { username: name.value.trim(), role: newRole.value, password, lang: Edge.lang });
      addForm.reset();
      Edge.flash(t("us_added", { u: user.username }));
      await load();
    } catch (e) { Edge.flash(e.message, true); }
  } }, el("label", {}, t("us_user"), name), el("label", {}, t("us_role"), newRole), fields,
  el("div", {}, el("button", { class: "action", type: "submit" }, t("us_add"))));

  app.append(
    el("section", { class: "card" }, listBox, el("p", { class: "muted" }, t("us_roles_note"))),
    el("section", { class: "card" }, el("h2", {}, t("us_add")), addForm),
    ownPasswordForm(),
  );
  await load();
});
