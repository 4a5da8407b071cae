/* The configuration page (admin): the TOML file in an editor, checked like `edge-agent check-config`
   (problems by key path), saved atomically with the version it was edited from (a lost update is refused),
   the keys that need a restart after a save, and the last ten versions to view or restore. */
"use strict";

Edge.addStrings({
  en: {
    cfg_title: "Configuration", cfg_file: "File", cfg_check: "Check", cfg_save: "Save", cfg_reload: "Reload",
    cfg_ok: "No problems: the configuration is valid.", cfg_problems: "{n} problem(s): nothing was written.",
    cfg_key: "Key", cfg_problem: "Problem", cfg_live_note: "The agent reads its configuration at start-up only: " +
      "a saved change takes effect when the agent is restarted (systemctl restart edge-agent).",
    cfg_saved: "Saved. The previous file is kept as a version.", cfg_unchanged: "Saved (the text did not change).",
    cfg_restart: "Restart the agent for these changes to take effect:", cfg_no_restart:
      "The saved file matches what the agent is running with: no restart needed.",
    cfg_conflict: "The file was changed by someone else since you loaded it. Reload, re-apply your edit, and save again.",
    cfg_no_file: "This agent was not started from a configuration file: there is nothing to edit here.",
    cfg_versions: "Previous versions", cfg_versions_none: "No previous version yet: one is kept at every save.",
    cfg_saved_at: "Saved", cfg_size: "Size", cfg_view: "View", cfg_restore: "Restore", cfg_close: "Close",
    cfg_restore_confirm: "Make this version the configuration file? The current file is kept as a version.",
    cfg_restored: "Version restored.", cfg_current_problems: "The file on disk has problems:",
    cfg_would_restart: "Saving this would need a restart for: {keys}", cfg_bytes: "{n} bytes",
    cfg_unsaved: "unsaved changes",
  },
  "zh-CN": {
    cfg_title: "配置", cfg_file: "文件", cfg_check: "检查", cfg_save: "保存", cfg_reload: "重新加载",
    cfg_ok: "没有问题：配置有效。", cfg_problems: "{n} 个问题：未写入任何内容。", cfg_key: "键", cfg_problem: "问题",
    cfg_live_note: "代理只在启动时读取配置：保存的更改在重启代理后生效（systemctl restart edge-agent）。",
    cfg_saved: "已保存。之前的文件已保留为一个版本。", cfg_unchanged: "已保存（内容没有变化）。",
    cfg_restart: "需要重启代理，以下更改才会生效：", cfg_no_restart: "保存的文件与代理正在使用的配置一致：无需重启。",
    cfg_conflict: "自您加载以来，文件已被他人修改。请重新加载，重新修改后再保存。",
    cfg_no_file: "此代理不是从配置文件启动的：这里没有可编辑的内容。",
    cfg_versions: "历史版本", cfg_versions_none: "还没有历史版本：每次保存都会保留一个。",
    cfg_saved_at: "保存时间", cfg_size: "大小", cfg_view: "查看", cfg_restore: "恢复", cfg_close: "关闭",
    cfg_restore_confirm: "将此版本恢复为配置文件？当前文件会保留为一个版本。", cfg_restored: "已恢复该版本。",
    cfg_current_problems: "磁盘上的文件有问题：", cfg_would_restart: "保存后需要重启才能生效的键：{keys}",
    cfg_bytes: "{n} 字节", cfg_unsaved: "未保存的更改",
  },
});

Edge.page(async (app) => {
  const { el, t } = Edge;
  app.append(el("h1", {}, t("cfg_title")));
  let config;
  try {
    config = await Edge.api("GET", "/api/config");
  } catch (e) {
    app.append(el("section", { class: "card", id: "cfg-no-file" }, e.status === 404 ? t("cfg_no_file") : e.message));
    return;
  }
  let baseVersion = config.version;

  const editor = el("textarea", { id: "cfg-editor", rows: 26, spellcheck: "false", autocomplete: "off",
    "aria-label": t("cfg_title"), class: "cfg-editor" });
  editor.value = config.toml;
  const dirty = el("span", { class: "muted", id: "cfg-dirty", hidden: true }, t("cfg_unsaved"));
  editor.addEventListener("input", () => { dirty.hidden = editor.value === config.toml; });
  const report = el("div", { id: "cfg-report", "aria-live": "polite" });
  const versionsBox = el("div", { id: "cfg-versions" });
  const viewer = el("div", { id: "cfg-viewer" });

  const problemTable = (problems) => el("div", { class: "table-wrap" }, el("table", { id: "cfg-problems" },
    el("thead", {}, el("tr", {}, el("th", {}, t("cfg_key")), el("th", {}, t("cfg_problem")))),
    el("tbody", {}, problems.map((p) => el("tr", {}, el("td", { class: "mono" }, p.key),
      el("td", { class: "error-text" }, p.message))))));

  const showProblems = (problems) => {
    report.replaceChildren(el("div", { class: "card cfg-bad" },
      el("p", { class: "error-text" }, t("cfg_problems", { n: problems.length })), problemTable(problems)));
  };

  const showSaved = (result) => {
    const restart = result.restart_needed || [];
    report.replaceChildren(el("div", { class: "card " + (restart.length ? "cfg-warn" : "cfg-good"), id: "cfg-saved" },
      el("p", { class: "ok-text" }, result.saved_previous_as ? t("cfg_saved") : t("cfg_unchanged")),
      restart.length
        ? el("div", { id: "cfg-restart" }, el("p", {}, el("strong", {}, t("cfg_restart"))),
          el("ul", {}, restart.map((k) => el("li", { class: "mono" }, k))))
        : el("p", { id: "cfg-restart-none" }, t("cfg_no_restart"))));
  };

  const check = async () => {
    const result = await Edge.api("POST", "/api/config/check", { toml: editor.value });
    if (!result.ok) { showProblems(result.problems); return; }
    report.replaceChildren(el("div", { class: "card cfg-good", id: "cfg-check-ok" }, el("p", { class: "ok-text" }, t("cfg_ok")),
      result.restart_needed.length ? el("p", {}, t("cfg_would_restart", { keys: result.restart_needed.join(", ") })) : null));
  };

  const reload = async () => {
    config = await Edge.api("GET", "/api/config");
    baseVersion = config.version;
    editor.value = config.toml;
    dirty.hidden = true;
    report.replaceChildren();
  };

  const handleWriteError = (e) => {
    const detail = e.body && e.body.detail;
    if (e.status === 422 && detail && detail.problems) showProblems(detail.problems);
    else if (e.status === 409) {
      report.replaceChildren(el("div", { class: "card cfg-bad", id: "cfg-conflict" }, el("p", { class: "error-text" }, t("cfg_conflict")),
        el("button", { class: "action secondary", type: "button", onclick: reload }, t("cfg_reload"))));
    } else Edge.flash(e.message, true);
  };

  const afterWrite = async (result, text) => {
    baseVersion = result.version;
    config = { ...config, toml: text, version: result.version };
    dirty.hidden = true;
    showSaved(result);
    await loadVersions();
  };

  const save = async () => {
    const text = editor.value;
    try {
      const result = await Edge.api("PUT", "/api/config", { toml: text, base_version: baseVersion });
      await afterWrite(result, text);
      Edge.flash(t("saved"));
    } catch (e) { handleWriteError(e); }
  };

  const restore = async (id) => {
    if (!confirm(t("cfg_restore_confirm"))) return;
    try {
      const kept = await Edge.api("GET", "/api/config/versions/" + encodeURIComponent(id));
      const result = await Edge.api("POST", "/api/config/versions/" + encodeURIComponent(id) + "/restore", { base_version: baseVersion });
      editor.value = kept.toml;
      await afterWrite(result, kept.toml);
      Edge.flash(t("cfg_restored"));
    } catch (e) { handleWriteError(e); }
  };

  const view = async (id) => {
    const kept = await Edge.api("GET", "/api/config/versions/" + encodeURIComponent(id));
    viewer.replaceChildren(el("div", { class: "card" },
      el("div", { class: "toolbar" }, el("h3", {}, id),
        el("button", { class: "action secondary", type: "button", onclick: () => restore(id) }, t("cfg_restore")),
        el("button", { class: "action secondary", type: "button", onclick: () => viewer.replaceChildren() }, t("cfg_close"))),
      el("pre", { class: "mono", id: "cfg-version-text" }, kept.toml)));
  };

  const loadVersions = async () => {
    const { versions } = await Edge.api("GET", "/api/config/versions");
    if (!versions.length) { versionsBox.replaceChildren(el("p", { class: "muted" }, t("cfg_versions_none"))); return; }
    versionsBox.replaceChildren(el("div", { class: "table-wrap" }, el("table", { id: "cfg-version-table" },
      el("thead", {}, el("tr", {}, el("th", {}, t("cfg_saved_at")), el("th", {}, "ID"), el("th", { class: "num" }, t("cfg_size")), el("th", {}, ""))),
      el("tbody", {}, versions.map((v) => el("tr", { dataset: { id: v.id } },
        el("td", {}, Edge.time(v.saved_ms), " ", el("span", { class: "muted" }, Edge.ago(v.saved_ms))),
        el("td", { class: "mono" }, v.id),
        el("td", { class: "num" }, t("cfg_bytes", { n: v.size })),
        el("td", {}, el("div", { class: "actions" },
          el("button", { class: "action secondary", type: "button", onclick: () => view(v.id) }, t("cfg_view")),
          el("button", { class: "action secondary", type: "button", onclick: () => restore(v.id) }, t("cfg_restore"))))))))));
  };

  const button = (id, cls, key, handler) => el("button", { id, class: cls, type: "button", onclick: async (ev) => {
    ev.target.disabled = true;
    try { await handler(); } catch (e) { Edge.flash(e.message, true); } finally { ev.target.disabled = false; }
  } }, t(key));

  app.append(
    el("section", { class: "card cfg-note" },
      el("dl", { class: "kv" }, el("dt", {}, t("cfg_file")), el("dd", { class: "mono", id: "cfg-path" }, config.path)),
      el("p", { class: "muted" }, t("cfg_live_note"))),
    ...(config.problems.length ? [el("section", { class: "card cfg-bad" }, el("p", { class: "error-text" }, t("cfg_current_problems")),
      problemTable(config.problems))] : []),
    el("section", { class: "card cfg-edit" },
      el("div", { class: "toolbar" },
        button("cfg-check", "action secondary", "cfg_check", check),
        button("cfg-save", "action", "cfg_save", save),
        button("cfg-reload", "action secondary", "cfg_reload", reload),
        dirty),
      report,
      editor),
    el("section", { class: "card" }, el("h2", {}, t("cfg_versions")), versionsBox, viewer),
  );
  await loadVersions();
});
