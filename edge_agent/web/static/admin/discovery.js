/* The discovery page: tags a base station reported, MQTT devices heard on the in-store broker and lock boards
   that answered a bus scan, which the agent has not adopted yet; a technician adopts them here. */
"use strict";

Edge.addStrings({
  en: {
    disc_title: "Discovery", disc_refresh: "Refresh",
    disc_policy: "Adoption: tags {tags}, MQTT devices {mqtt}. Discovered devices are recorded but not used until adopted.",
    disc_auto: "automatic", disc_allow_list: "allow-list", disc_off: "no in-store broker",
    disc_tags: "Tags", disc_tags_note: "Reported by a base station, not adopted: no picture is sent to them. Pairing a tag adopts it too.",
    disc_tags_more: "{n} discovered in all; the most recently seen are listed.",
    disc_devices: "MQTT devices", disc_devices_note: "Heard on the in-store broker, not adopted: nothing of theirs reaches the cloud or a kiosk.",
    disc_boards: "Lock boards", disc_boards_note: "Boards answering a bus scan at a number no configured board uses.",
    disc_scan: "Scan the lock buses", disc_scanning: "Scanning…",
    disc_scan_done: "Scan done: {n} boards answered, {m} not configured.", disc_no_buses: "No lock bus is configured.",
    disc_adopt: "Adopt", disc_adopt_config: "Adopt and add to the configuration", disc_adopted: "adopted",
    disc_adopted_tag: "Tag {id} adopted.", disc_adopted_device: "Device {id} adopted.",
    disc_adopted_board: "Board {id} adopted. Add this to the configuration, then restart the agent:",
    disc_added_board: "Board {id} added to the configuration; it is used from the next start of the agent.",
    disc_none: "Nothing discovered.", disc_snippet: "Configuration snippet", disc_discovered: "discovered",
    col_id: "Id", col_type: "Type", col_station: "Base station", col_battery: "Battery", col_signal: "Signal",
    col_seen: "Last seen", col_kind: "Kind", col_model: "Model", col_state: "State", col_bus: "Bus",
    col_number: "Number", col_answer: "Last answer", col_board_id: "Board id", col_locks: "Locks",
    locks_unknown: "≤ {n}", locks_unknown_note: "The board's status answer does not say how many locks are wired: up to {n}.",
  },
  "zh-CN": {
    disc_title: "发现", disc_refresh: "刷新",
    disc_policy: "纳管方式：价签 {tags}，MQTT 设备 {mqtt}。已发现的设备会被记录，但纳管前不会使用。",
    disc_auto: "自动", disc_allow_list: "白名单", disc_off: "未使用店内 MQTT",
    disc_tags: "价签", disc_tags_note: "基站上报但未纳管的价签：不会向其发送画面。绑定商品即纳管。",
    disc_tags_more: "共发现 {n} 个；列出最近出现的。",
    disc_devices: "MQTT 设备", disc_devices_note: "店内 MQTT 上出现但未纳管的设备：其数据不会上报云端，也不会进入自助屏。",
    disc_boards: "锁控板", disc_boards_note: "总线扫描中应答、但编号未在配置中使用的锁控板。",
    disc_scan: "扫描锁控总线", disc_scanning: "正在扫描…",
    disc_scan_done: "扫描完成：{n} 块板应答，{m} 块未配置。", disc_no_buses: "未配置锁控总线。",
    disc_adopt: "纳管", disc_adopt_config: "纳管并写入配置", disc_adopted: "已纳管",
    disc_adopted_tag: "价签 {id} 已纳管。", disc_adopted_device: "设备 {id} 已纳管。",
    disc_adopted_board: "锁控板 {id} 已纳管。请将以下内容加入配置并重启代理：",
    disc_added_board: "锁控板 {id} 已写入配置；代理下次启动时生效。",
    disc_none: "没有发现新设备。", disc_snippet: "配置片段", disc_discovered: "已发现",
    col_id: "编号", col_type: "型号", col_station: "基站", col_battery: "电量", col_signal: "信号",
    col_seen: "最近出现", col_kind: "类型", col_model: "型号", col_state: "状态", col_bus: "总线",
    col_number: "板号", col_answer: "最近应答", col_board_id: "板编号", col_locks: "锁数",
    locks_unknown: "≤ {n}", locks_unknown_note: "锁控板的状态应答不提供实际接线的锁数：最多 {n} 个。",
  },
});

Edge.page(async (app) => {
  const el = Edge.el;
  const t = Edge.t;
  const tagsCard = el("section", { class: "card wide", id: "discovered-tags" });
  const devicesCard = el("section", { class: "card", id: "discovered-devices" });
  const boardsCard = el("section", { class: "card", id: "discovered-boards" });
  const policy = el("p", { class: "muted", id: "discovery-policy" });
  const boardNote = el("div", { id: "board-note" });

  const table = (head, rows) => el("div", { class: "table-wrap" }, el("table", {},
    el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))), el("tbody", {}, rows)));
  const policyName = (p) => (p === "auto" ? t("disc_auto") : p === "allow_list" ? t("disc_allow_list") : t("disc_off"));

  async function adopt(path, message) {
    try {
      const answer = await Edge.api("POST", path, {});
      Edge.flash(message);
      await load();
      return answer;
    } catch (e) {
      Edge.flash(e.message, true);
      return null;
    }
  }

  function showTags(data) {
    const rows = data.tags.map((tag) => el("tr", { dataset: { tag: tag.tag_id } },
      el("td", { class: "mono" }, tag.tag_id), el("td", {}, tag.type), el("td", {}, tag.base_station || ""),
      el("td", { class: "num" }, tag.battery_mv === null ? "" : tag.battery_mv + " mV"),
      el("td", { class: "num" }, tag.rssi === null ? "" : tag.rssi + " dBm"), el("td", {}, Edge.ago(tag.last_seen_ms)),
      el("td", {}, el("button", { type: "button", class: "action", onclick: () =>
        adopt("/api/discovery/tags/" + tag.tag_id + "/adopt", t("disc_adopted_tag", { id: tag.tag_id })) }, t("disc_adopt")))));
    tagsCard.replaceChildren(el("h2", {}, t("disc_tags"), " ", Edge.badge(String(data.tags_discovered), data.tags_discovered ? "discovered" : "")),
      el("p", { class: "muted" }, t("disc_tags_note")),
      data.tags_discovered > data.tags.length ? el("p", { class: "muted" }, t("disc_tags_more", { n: data.tags_discovered })) : "",
      rows.length ? table([t("col_id"), t("col_type"), t("col_station"), t("col_battery"), t("col_signal"), t("col_seen"), ""], rows)
        : el("p", { class: "muted" }, t("disc_none")));
  }

  function showDevices(data) {
    const rows = data.mqtt_devices.map((d) => el("tr", { dataset: { device: d.device_id } },
      el("td", { class: "mono" }, d.device_id), el("td", {}, d.kind || ""), el("td", {}, d.model ? d.model + " " + (d.fw || "") : ""),
      el("td", {}, d.online === null ? "" : Edge.badge(t(d.online ? "online" : "offline"), d.online ? "online" : "offline")),
      el("td", {}, Edge.ago(d.last_seen_ms)),
      el("td", {}, el("button", { type: "button", class: "action", onclick: () =>
        adopt("/api/discovery/mqtt-devices/" + encodeURIComponent(d.device_id) + "/adopt", t("disc_adopted_device", { id: d.device_id })) }, t("disc_adopt")))));
    devicesCard.replaceChildren(el("h2", {}, t("disc_devices"), " ", Edge.badge(String(rows.length), rows.length ? "discovered" : "")),
      el("p", { class: "muted" }, t("disc_devices_note")),
      rows.length ? table([t("col_id"), t("col_kind"), t("col_model"), t("col_state"), t("col_seen"), ""], rows)
        : el("p", { class: "muted" }, t("disc_none")));
  }

  async function adoptBoard(board, writeConfig) {
    try {
      const answer = await Edge.api("POST", "/api/discovery/lock-boards/" + encodeURIComponent(board.id) + "/adopt",
        { write_config: writeConfig });
      const id = answer.board.board_id;
      boardNote.replaceChildren(writeConfig
        ? el("p", { class: "ok-text" }, t("disc_added_board", { id }))
        : el("div", {}, el("p", { class: "ok-text" }, t("disc_adopted_board", { id })), el("pre", { class: "mono", id: "board-snippet" }, answer.board.snippet)));
      await load();
    } catch (e) {
      const problems = e.body && e.body.detail && e.body.detail.problems;
      Edge.flash(problems ? e.message + ": " + problems.map((p) => p.key + " " + p.message).join("; ") : e.message, true);
    }
  }

  async function scan(button) {
    button.disabled = true;
    button.textContent = t("disc_scanning");
    try {
      const result = await Edge.api("POST", "/api/discovery/lock-boards/scan", {});
      const answered = result.buses.reduce((n, b) => n + b.answered.length, 0);
      Edge.flash(t("disc_scan_done", { n: answered, m: result.found.length }));
      await load();
    } catch (e) {
      Edge.flash(e.message, true);
    } finally {
      button.disabled = false;
      button.textContent = t("disc_scan");
    }
  }

  function showBoards(data) {
    const scanButton = el("button", { type: "button", class: "action", id: "scan-buses", disabled: data.buses.length === 0 },
      t("disc_scan"));
    scanButton.addEventListener("click", () => scan(scanButton));
    const rows = data.lock_boards.map((b) => el("tr", { dataset: { board: b.id } },
      el("td", {}, b.bus), el("td", { class: "num" }, b.number), el("td", {}, Edge.ago(b.last_answer_ms)),
      el("td", { class: "mono" }, b.board_id), el("td", { title: t("locks_unknown_note", { n: b.max_locks }) }, t("locks_unknown", { n: b.max_locks })),
      el("td", {}, b.adopted ? Edge.badge(t("disc_adopted"), "ok") : Edge.badge(t("disc_discovered"), "discovered")),
      el("td", { class: "actions" },
        b.adopted ? el("details", {}, el("summary", {}, t("disc_snippet")), el("pre", { class: "mono" }, b.snippet))
          : el("button", { type: "button", class: "action", onclick: () => adoptBoard(b, false) }, t("disc_adopt")),
        Edge.can("admin") ? el("button", { type: "button", class: "secondary", onclick: () => adoptBoard(b, true) }, t("disc_adopt_config")) : null)));
    boardsCard.replaceChildren(el("h2", {}, t("disc_boards")), el("p", { class: "muted" }, t("disc_boards_note")),
      el("div", { class: "actions" }, scanButton, data.buses.length ? null : el("span", { class: "muted" }, t("disc_no_buses"))),
      boardNote,
      rows.length ? table([t("col_bus"), t("col_number"), t("col_answer"), t("col_board_id"), t("col_locks"), t("col_state"), ""], rows)
        : el("p", { class: "muted" }, t("disc_none")));
  }

  async function load() {
    const data = await Edge.api("GET", "/api/discovery");
    policy.textContent = t("disc_policy", { tags: policyName(data.policy.tags), mqtt: policyName(data.policy.mqtt_devices) });
    showTags(data);
    showDevices(data);
    showBoards(data);
    app.dataset.loaded = String(Date.now());
  }

  app.append(
    el("div", { class: "toolbar" }, el("h1", {}, t("disc_title")),
      el("button", { type: "button", class: "secondary", id: "discovery-refresh", onclick: () => load().catch((e) => Edge.flash(e.message, true)) }, t("disc_refresh"))),
    policy, el("div", { class: "grid discovery-grid" }, boardsCard, devicesCard, tagsCard));
  await load();
  // New devices show up without a reload; one timer however often the language is switched.
  clearInterval(window.discoveryTimer);
  window.discoveryTimer = setInterval(() => { if (!document.hidden) load().catch(() => {}); }, 10000);
});
