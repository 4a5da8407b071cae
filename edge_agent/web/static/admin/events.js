/* Events and audit (technician): the events still waiting in the outbox (sent ones are deleted once the cloud
   acknowledged them, so only unsent ones can be shown), filtered by type prefix and time; the door audit
   log with its hash chain verified on demand; and the diagnostics bundle download. */
"use strict";

Edge.addStrings({
  en: {
    ev_title: "Events and audit", ev_diag: "Download diagnostics", ev_diag_note: "A zip of recent logs, the configuration " +
      "(secrets redacted), database figures, versions and health, for support.",
    ev_unsent: "Events", ev_unsent_note: "Only unsent events are kept on disk: the outbox deletes an event " +
      "once the cloud acknowledged it.", ev_tab_unsent: "Waiting to be sent", ev_tab_recent: "Recently published",
    ev_recent_note: "The last 1,000 events published since the agent started, kept in memory: each says whether it has been sent.",
    ev_sent_col: "Sent", ev_type: "Type starts with", ev_since: "From", ev_until: "Until",
    ev_limit: "Rows", ev_apply: "Apply", ev_clear: "Clear", ev_seq: "Seq", ev_type_col: "Type", ev_time: "Created", ev_class: "Class",
    ev_payload: "Payload", ev_none: "No unsent event matches: everything else has reached the cloud.",
    ev_none_recent: "No recently published event matches.",
    ev_older: "Older", ev_newest: "Newest", ev_waiting: "{n} waiting · {bytes} bytes", ev_not_shown: "(too large to show)",
    ev_states: "Device states", ev_device: "Device", ev_rev: "Revision", ev_pending: "pending", ev_sent: "sent",
    ev_states_none: "No device state recorded.", ev_state: "State", ev_updated: "Updated",
    au_title: "Door audit log", au_verify: "Verify chain", au_ok: "Chain intact: {n} rows verified.",
    au_bad: "Chain BROKEN at row {seq}: {reason} ({n} rows before it verified).", au_none: "No door opening recorded yet.",
    au_unavailable: "This store has no lockers: there is no door audit log.", au_kind: "Kind", au_compartment: "Door",
    au_actor: "By", au_order: "Order", au_detail: "Detail", au_hash: "Hash",
    au_kind_code: "pickup code", au_kind_staff: "staff", au_kind_remote: "remote", au_kind_test: "test",
    au_kind_uncommanded: "uncommanded",
  },
  "zh-CN": {
    ev_title: "事件与审计", ev_diag: "下载诊断包", ev_diag_note: "包含最近日志、配置（已隐去密钥）、数据库统计、版本和健康状态，供技术支持使用。",
    ev_unsent: "事件", ev_unsent_note: "磁盘上只保留未发送的事件：云端确认后，事件即从待发队列删除。",
    ev_tab_unsent: "待发送", ev_tab_recent: "最近发布", ev_recent_note: "代理启动以来最近发布的 1000 个事件，保存在内存中：每个都标明是否已发送。",
    ev_sent_col: "已发送",
    ev_type: "类型前缀", ev_since: "起始", ev_until: "截止", ev_limit: "行数", ev_apply: "应用", ev_clear: "清除",
    ev_seq: "序号", ev_type_col: "类型", ev_time: "创建时间", ev_class: "类别", ev_payload: "内容",
    ev_none: "没有匹配的未发送事件：其余事件均已送达云端。", ev_none_recent: "没有匹配的最近发布事件。", ev_older: "更早", ev_newest: "最新",
    ev_waiting: "{n} 个待发 · {bytes} 字节", ev_not_shown: "（内容过大，未显示）", ev_states: "设备状态", ev_device: "设备",
    ev_rev: "版本", ev_pending: "待发送", ev_sent: "已发送", ev_states_none: "没有设备状态记录。", ev_state: "状态",
    ev_updated: "更新时间", au_title: "柜门审计日志", au_verify: "校验哈希链", au_ok: "哈希链完整：已校验 {n} 行。",
    au_bad: "哈希链在第 {seq} 行断裂：{reason}（之前 {n} 行校验通过）。", au_none: "还没有开门记录。",
    au_unavailable: "本店没有储物柜：没有柜门审计日志。", au_kind: "类型", au_compartment: "柜门", au_actor: "操作者",
    au_order: "订单", au_detail: "详情", au_hash: "哈希", au_kind_code: "取件码", au_kind_staff: "店员",
    au_kind_remote: "远程", au_kind_test: "测试", au_kind_uncommanded: "无指令",
  },
});

Edge.page(async (app) => {
  const { el, t } = Edge;
  const json = (value) => JSON.stringify(value);
  const toMs = (input) => (input.value ? new Date(input.value).getTime() : null);

  // -- diagnostics ------------------------------------------------------------------------------
  app.append(el("div", { class: "toolbar" }, el("h1", {}, t("ev_title")), el("span", { class: "spacer" }),
    el("a", { class: "button", id: "ev-diagnostics", href: "/api/diagnostics.zip", download: "" }, t("ev_diag"))),
  el("p", { class: "muted" }, t("ev_diag_note")));

  // -- unsent events ----------------------------------------------------------------------------
  const typeInput = el("input", { id: "ev-type", placeholder: "pickup.", maxlength: 64, size: 16 });
  const sinceInput = el("input", { id: "ev-since", type: "datetime-local" });
  const untilInput = el("input", { id: "ev-until", type: "datetime-local" });
  const limitSelect = el("select", { id: "ev-limit" }, [50, 100, 200, 500].map((n) => el("option", { value: n, selected: n === 100 }, String(n))));
  const summary = el("span", { class: "muted", id: "ev-summary" });
  const eventsBox = el("div", { id: "ev-events" });
  const pager = el("div", { class: "pager" });
  let pages = []; // before_seq of each page shown, for "newest"
  let state = "unsent";
  const note = el("p", { class: "muted", id: "ev-note" }, t("ev_unsent_note"));
  const tabButton = (value, key) => el("button", { type: "button", id: "ev-tab-" + value, "aria-selected": String(value === state),
    onclick: () => {
      state = value;
      for (const b of tabs.querySelectorAll("button")) b.setAttribute("aria-selected", String(b.id === "ev-tab-" + value));
      note.textContent = t(value === "unsent" ? "ev_unsent_note" : "ev_recent_note");
      pages = [];
      loadEvents(null).catch((e) => Edge.flash(e.message, true));
    } }, t(key));
  const tabs = el("div", { class: "tabs", role: "tablist" }, tabButton("unsent", "ev_tab_unsent"), tabButton("recent", "ev_tab_recent"));

  const loadEvents = async (beforeSeq) => {
    const params = new URLSearchParams({ limit: limitSelect.value, state });
    if (typeInput.value.trim()) params.set("type", typeInput.value.trim());
    const since = toMs(sinceInput), until = toMs(untilInput);
    if (since !== null) params.set("since_ms", since);
    if (until !== null) params.set("until_ms", until);
    if (beforeSeq) params.set("before_seq", beforeSeq);
    const answer = await Edge.api("GET", "/api/events?" + params);
    summary.textContent = t("ev_waiting", { n: answer.outbox.events, bytes: answer.outbox.bytes });
    if (!answer.events.length) eventsBox.replaceChildren(el("p", { class: "muted", id: "ev-empty" }, t(state === "recent" ? "ev_none_recent" : "ev_none")));
    else eventsBox.replaceChildren(el("div", { class: "table-wrap" }, el("table", { id: "ev-table" },
      el("thead", {}, el("tr", {}, el("th", { class: "num" }, t("ev_seq")), el("th", {}, t("ev_time")), el("th", {}, t("ev_type_col")),
        el("th", {}, t("ev_class")), state === "recent" ? el("th", {}, t("ev_sent_col")) : null, el("th", {}, t("ev_payload")))),
      el("tbody", {}, answer.events.map((e) => el("tr", { dataset: { type: e.type } },
        el("td", { class: "num" }, e.seq), el("td", {}, Edge.time(e.created_ms)), el("td", { class: "mono" }, e.type),
        el("td", {}, Edge.badge(e.class, e.class === "critical" ? "warn" : "")),
        state === "recent" ? el("td", {}, Edge.badge(e.sent ? t("ev_sent") : t("ev_pending"), e.sent ? "ok" : "warn")) : null,
        el("td", { class: "mono ev-payload" }, e.payload_shown ? json(e.payload) : t("ev_not_shown"))))))));
    pager.replaceChildren(...[
      beforeSeq ? el("button", { class: "action secondary", type: "button", onclick: () => { pages = []; loadEvents(null); } }, t("ev_newest")) : null,
      answer.next_before_seq ? el("button", { class: "action secondary", type: "button", id: "ev-older",
        onclick: () => { pages.push(answer.next_before_seq); loadEvents(answer.next_before_seq); } }, t("ev_older")) : null,
    ].filter(Boolean));
  };

  const filters = el("form", { class: "toolbar", id: "ev-filters", onsubmit: (ev) => { ev.preventDefault(); pages = []; loadEvents(null).catch((e) => Edge.flash(e.message, true)); } },
    el("label", {}, t("ev_type"), typeInput), el("label", {}, t("ev_since"), sinceInput), el("label", {}, t("ev_until"), untilInput),
    el("label", {}, t("ev_limit"), limitSelect),
    el("button", { class: "action", type: "submit", id: "ev-apply" }, t("ev_apply")),
    el("button", { class: "action secondary", type: "button", onclick: () => { typeInput.value = sinceInput.value = untilInput.value = ""; pages = []; loadEvents(null); } }, t("ev_clear")));

  app.append(el("section", { class: "card", id: "ev-unsent" }, el("div", { class: "toolbar" }, el("h2", {}, t("ev_unsent")), summary),
    tabs, note, filters, eventsBox, pager));

  // -- device states ----------------------------------------------------------------------------
  const statesBox = el("div", { id: "ev-states" });
  app.append(el("section", { class: "card" }, el("h2", {}, t("ev_states")), statesBox));
  const loadStates = async () => {
    const { states } = await Edge.api("GET", "/api/device-states?limit=100");
    if (!states.length) { statesBox.replaceChildren(el("p", { class: "muted" }, t("ev_states_none"))); return; }
    statesBox.replaceChildren(el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, t("ev_device")), el("th", { class: "num" }, t("ev_rev")), el("th", {}, ""),
        el("th", {}, t("ev_updated")), el("th", {}, t("ev_state")))),
      el("tbody", {}, states.map((s) => el("tr", {}, el("td", { class: "mono" }, s.device_id), el("td", { class: "num" }, s.rev),
        el("td", {}, Edge.badge(s.pending ? t("ev_pending") : t("ev_sent"), s.pending ? "warn" : "ok")),
        el("td", {}, Edge.ago(s.updated_ms)), el("td", { class: "mono ev-payload" }, json(s.state))))))));
  };

  // -- audit log --------------------------------------------------------------------------------
  const banner = el("div", { id: "au-banner", "aria-live": "polite" });
  const auditBox = el("div", { id: "au-log" });
  const auditPager = el("div", { class: "pager" });
  const verify = async (ev) => {
    ev.target.disabled = true;
    try {
      const r = await Edge.api("GET", "/api/audit/verify");
      banner.replaceChildren(r.ok
        ? el("p", { class: "card au-ok ok-text", id: "au-verdict", dataset: { ok: "1" } }, t("au_ok", { n: r.rows }))
        : el("p", { class: "card au-bad error-text", id: "au-verdict", dataset: { ok: "0" } },
          t("au_bad", { seq: r.first_bad_seq, reason: r.reason, n: r.rows })));
    } catch (e) { Edge.flash(e.message, true); } finally { ev.target.disabled = false; }
  };
  const AUDIT_PAGE = 100;
  const loadAudit = async (upTo) => {
    // The newest AUDIT_PAGE rows up to seq `upTo` (the log's end by default), shown newest first.
    const probe = upTo === undefined ? await Edge.api("GET", "/api/audit?limit=1") : null;
    if (probe && !probe.available) { auditBox.replaceChildren(el("p", { class: "muted" }, t("au_unavailable"))); return; }
    const end = upTo === undefined ? probe.last_seq : upTo;
    const after = Math.max(0, end - AUDIT_PAGE);
    const answer = await Edge.api("GET", `/api/audit?after_seq=${after}&limit=${end - after || 1}`);
    const records = answer.records.filter((r) => r.seq <= end).reverse();
    if (!records.length) { auditBox.replaceChildren(el("p", { class: "muted" }, t("au_none"))); auditPager.replaceChildren(); return; }
    auditBox.replaceChildren(el("div", { class: "table-wrap" }, el("table", { id: "au-table" },
      el("thead", {}, el("tr", {}, el("th", { class: "num" }, t("ev_seq")), el("th", {}, t("ev_time")), el("th", {}, t("au_kind")),
        el("th", {}, t("au_compartment")), el("th", {}, t("au_actor")), el("th", {}, t("au_order")), el("th", {}, t("au_detail")),
        el("th", {}, t("au_hash")))),
      el("tbody", {}, records.map((r) => el("tr", { dataset: { seq: r.seq } },
        el("td", { class: "num" }, r.seq), el("td", {}, Edge.time(r.ts_ms)), el("td", {}, Edge.badge(t("au_kind_" + r.kind))),
        el("td", {}, r.compartment || ""), el("td", {}, r.actor || ""), el("td", { class: "mono" }, r.order_id || ""),
        el("td", { class: "mono ev-payload" }, json(r.detail)), el("td", { class: "mono", title: r.hash }, r.hash.slice(0, 12) + "…")))))));
    auditPager.replaceChildren(...(after > 0
      ? [el("button", { class: "action secondary", type: "button", onclick: () => loadAudit(after) }, t("ev_older"))] : []));
  };
  app.append(el("section", { class: "card", id: "au-section" },
    el("div", { class: "toolbar" }, el("h2", {}, t("au_title")),
      el("button", { class: "action", type: "button", id: "au-verify", onclick: verify }, t("au_verify"))),
    banner, auditBox, auditPager));

  await Promise.all([loadEvents(null), loadStates(), loadAudit()]);
});
