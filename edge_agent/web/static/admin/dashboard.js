/* The dashboard: the store at a glance (GET /api/dashboard), kept current by the live stream (/api/live):
   `dashboard` events replace the snapshot, `device` events patch one device at once. Never reloads. */
"use strict";

Edge.addStrings({
  en: {
    dash_cloud: "Cloud link", dash_outbox: "Outbox", dash_stations: "Base stations", dash_boards: "Lock boards",
    dash_kiosks: "Kiosks", dash_mqtt: "MQTT devices", dash_alarms: "Open alarms", dash_tags: "Shelf tags",
    dash_updates: "Tag updates", connected: "connected", disconnected: "disconnected", disabled: "not configured",
    protocol: "Protocol", last_ack: "Last acknowledgement", events_waiting: "Events waiting", size: "Size",
    oldest_unsent: "Oldest unsent", outbox_full: "full", outbox_ok: "accepting", state: "State",
    tags_total: "Tags", tags_paired: "Paired", tags_unpaired: "Unpaired", tags_offline: "Offline (1 h)",
    tags_discovered: "Discovered", updates_pending: "{n} waiting", updates_failed: "{n} failed",
    updates_done: "{done} of {total} confirmed", no_updates: "No tag updates yet.", no_stations: "No base station configured.",
    no_boards: "No lock board configured.", no_kiosks: "No kiosk configured.", no_devices: "No device heard yet.",
    no_alarms: "No open alarms.", reachable: "reachable", unreachable: "not answering", not_polled: "not polled",
    link: "Link", frames: "frames {sent} sent / {received} received", retries: "{n} retransmits",
    resets: "{n} resets", crc_errors: "{n} CRC errors", tags_on: "{n} tags", bus: "bus {bus}", adopted: "adopted", discovered_badge: "discovered",
    unknown: "unknown", more: "and {n} more", last_seen: "last seen {ago}", live: "live", reconnecting: "reconnecting…",
    broker: "In-store broker", doors: "Doors", doors_summary: "{enabled} of {total} in service · {open} open · {occupied} with a parcel",
    to_devices: "Devices →", to_lockers: "Lockers →",
    alarm_out_of_service: "Door {c} is out of service.", alarm_door_forced: "Door {c} was opened without a command.",
    alarm_door_left_open: "Door {c} has been left open.", alarm_code_guessing: "Unusually many wrong pickup codes were typed.",
    since: "since {ago}",
  },
  "zh-CN": {
    dash_cloud: "云端连接", dash_outbox: "待发队列", dash_stations: "基站", dash_boards: "锁控板", dash_kiosks: "自助终端",
    dash_mqtt: "MQTT 设备", dash_alarms: "未处理告警", dash_tags: "电子价签", dash_updates: "价签更新",
    connected: "已连接", disconnected: "未连接", disabled: "未配置", protocol: "协议", last_ack: "最近确认",
    events_waiting: "待发事件", size: "大小", oldest_unsent: "最早未发", outbox_full: "已满", outbox_ok: "正常接收", state: "状态",
    tags_total: "价签", tags_paired: "已绑定", tags_unpaired: "未绑定", tags_offline: "离线（1 小时）", tags_discovered: "新发现",
    updates_pending: "{n} 个等待", updates_failed: "{n} 个失败", updates_done: "已确认 {done} / {total}",
    no_updates: "还没有价签更新。", no_stations: "未配置基站。", no_boards: "未配置锁控板。", no_kiosks: "未配置自助终端。",
    no_devices: "尚未发现设备。", no_alarms: "没有未处理的告警。", reachable: "可达", unreachable: "无应答", not_polled: "未轮询",
    link: "链路", frames: "已发 {sent} 帧 / 已收 {received} 帧", retries: "重传 {n} 次", resets: "复位 {n} 次", crc_errors: "CRC 错误 {n} 个",
    tags_on: "{n} 个价签", bus: "总线 {bus}", adopted: "已接入", discovered_badge: "待接入", unknown: "未知",
    more: "另有 {n} 个", last_seen: "最近在线 {ago}", live: "实时", reconnecting: "正在重连…", broker: "店内消息服务器",
    doors: "柜门", doors_summary: "{total} 个中 {enabled} 个可用 · {open} 个打开 · {occupied} 个有包裹",
    to_devices: "设备 →", to_lockers: "储物柜 →",
    alarm_out_of_service: "{c} 号柜门已停用。", alarm_door_forced: "{c} 号柜门未经指令被打开。",
    alarm_door_left_open: "{c} 号柜门长时间未关。", alarm_code_guessing: "取件码错误次数异常。", since: "始于 {ago}",
  },
});

Edge.page(async (app) => {
  const { el, t } = Edge;
  const MAX_ROWS = 40;
  let snap = await Edge.api("GET", "/api/dashboard");
  // Server time minus ours: ages are computed against the agent's clock, not the browser's.
  let skew = snap.now_ms - Date.now();
  const ago = (ms) => (ms === null || ms === undefined ? t("never") : Edge.ago(ms - skew));

  const liveBadge = Edge.badge(t("live"), "ok");
  liveBadge.id = "dash-live";
  const card = (id, titleKey, extra) => el("section", { class: "card", id }, el("h2", {}, t(titleKey), extra || null));
  const cards = {
    cloud: card("dash-cloud", "dash_cloud"),
    outbox: card("dash-outbox", "dash_outbox"),
    alarms: card("dash-alarms", "dash_alarms"),
    tags: card("dash-tags", "dash_tags"),
    updates: card("dash-updates", "dash_updates"),
    stations: card("dash-stations", "dash_stations"),
    boards: card("dash-boards", "dash_boards"),
    kiosks: card("dash-kiosks", "dash_kiosks"),
    mqtt: card("dash-mqtt", "dash_mqtt"),
  };
  const links = el("div", { class: "actions" },
    Edge.can("technician") ? el("a", { href: "/ui/devices", class: "button secondary", id: "to-devices" }, t("to_devices")) : null,
    el("a", { href: "/ui/lockers", class: "button secondary", id: "to-lockers" }, t("to_lockers")));
  app.append(
    el("div", { class: "toolbar" }, el("h1", {}, t("nav_dashboard")), liveBadge, el("span", { class: "spacer" }), links),
    el("div", { class: "grid dash-grid" }, ...Object.values(cards)),
  );

  const fill = (node, ...children) => {
    const title = node.querySelector("h2");
    node.replaceChildren(title, ...children);
  };
  const kv = (...pairs) => el("dl", { class: "kv" }, ...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const onOff = (on, okKey, badKey) =>
    on === null || on === undefined ? Edge.badge(t("unknown"), "warn") : Edge.badge(t(on ? okKey : badKey), on ? "ok" : "bad");
  const bytes = (n) => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`);
  const num = (n) => Number(n).toLocaleString(Edge.lang);
  const more = (list) => (list.length > MAX_ROWS ? el("p", { class: "muted" }, t("more", { n: list.length - MAX_ROWS })) : null);
  const dot = (on) => el("span", { class: "dot " + (on === true ? "ok" : on === false ? "bad" : "warn") });

  function renderCloud() {
    const c = snap.cloud;
    fill(cards.cloud, c.enabled
      ? kv([t("state"), onOff(c.connected, "connected", "disconnected")],
        [t("protocol"), c.protocol ? "MQTT " + c.protocol : "–"],
        [t("last_ack"), ago(c.last_ack_ms)])
      : el("p", { class: "muted" }, t("disabled")));
    const o = c.outbox;
    fill(cards.outbox, o
      ? kv([t("events_waiting"), el("span", { class: "big", id: "outbox-depth" }, num(o.depth))],
        [t("size"), bytes(o.bytes)],
        [t("oldest_unsent"), o.oldest_ms === null ? t("none") : ago(o.oldest_ms)],
        [t("state"), o.full ? Edge.badge(t("outbox_full"), "bad") : Edge.badge(t("outbox_ok"), "ok")])
      : el("p", { class: "muted" }, t("none")));
  }

  function renderAlarms() {
    const list = snap.alarms;
    const text = (a) => t("alarm_" + a.kind, { c: a.compartment || "" });
    fill(cards.alarms, list.length === 0
      ? el("p", { class: "ok-text" }, t("no_alarms"))
      : el("ul", { class: "dash-list" }, ...list.map((a) => el("li", { dataset: { alarm: `${a.kind}:${a.compartment || ""}` } },
        Edge.badge(a.compartment || "!", "alarm"), " ", text(a),
        a.since_ms ? el("span", { class: "muted" }, " · " + t("since", { ago: ago(a.since_ms) })) : null))));
    cards.alarms.classList.toggle("dash-alarming", list.length > 0);
  }

  function renderTags() {
    const g = snap.tags;
    const d = snap.compartments;
    fill(cards.tags,
      kv([t("tags_total"), el("span", { class: "big" }, num(g.total))],
        [t("tags_paired"), num(g.paired)], [t("tags_unpaired"), num(g.unpaired)],
        [t("tags_offline"), g.offline ? Edge.badge(num(g.offline), "warn") : "0"],
        [t("tags_discovered"), num(g.discovered)],
        ...(d.total ? [[t("doors"), t("doors_summary", d)]] : [])));
  }

  function renderUpdates() {
    const u = snap.tag_updates;
    const total = u ? u.queued + u.sending + u.confirmed + u.failed : 0;
    if (!total) {
      fill(cards.updates, el("p", { class: "muted" }, t("no_updates")));
      return;
    }
    fill(cards.updates,
      el("progress", { class: "dash-progress", id: "updates-bar", max: total, value: u.confirmed }),
      el("p", {}, t("updates_done", { done: num(u.confirmed), total: num(total) })),
      el("p", { class: "actions" },
        u.queued + u.sending ? Edge.badge(t("updates_pending", { n: num(u.queued + u.sending) }), "warn") : null,
        u.failed ? Edge.badge(t("updates_failed", { n: num(u.failed) }), "bad") : null));
  }

  function renderStations() {
    const list = snap.base_stations;
    fill(cards.stations, list.length === 0 ? el("p", { class: "muted" }, t("no_stations")) :
      el("ul", { class: "dash-list" }, ...list.map((s) => el("li", { dataset: { station: s.name } },
        dot(s.connected), el("strong", {}, s.name), " ", onOff(s.connected, "connected", "disconnected"),
        el("div", { class: "muted" }, t("tags_on", { n: num(s.tags) }),
          s.link ? " · " + t("frames", { sent: num(s.link.frames_sent), received: num(s.link.frames_received) }) +
            " · " + t("retries", { n: num(s.link.retransmits) }) + " · " + t("crc_errors", { n: num(s.link.crc_errors || 0) }) +
            " · " + t("resets", { n: num(s.link.peer_resets) }) : "")))));
  }

  function renderBoards() {
    const list = snap.lock_boards;
    fill(cards.boards, list.length === 0 ? el("p", { class: "muted" }, t("no_boards")) :
      el("ul", { class: "dash-list" }, ...list.map((b) => el("li", { dataset: { board: b.id } },
        dot(b.reachable), el("strong", {}, b.id), " ",
        b.reachable === null ? Edge.badge(t("not_polled"), "warn") : onOff(b.reachable, "reachable", "unreachable"),
        el("span", { class: "muted" }, " · " + t("bus", { bus: b.bus || "–" }))))));
  }

  function renderKiosks() {
    const list = snap.kiosks;
    fill(cards.kiosks, list.length === 0 ? el("p", { class: "muted" }, t("no_kiosks")) :
      el("ul", { class: "dash-list" }, ...list.slice(0, MAX_ROWS).map((k) => el("li", { dataset: { kiosk: k.id } },
        dot(k.online), el("strong", {}, k.name), el("span", { class: "muted" }, ` (${k.id}) `),
        onOff(k.online, "online", "offline"),
        k.online ? null : el("span", { class: "muted" }, " · " + t("last_seen", { ago: ago(k.last_seen_ms) })))), more(list)));
  }

  function renderMqtt() {
    const m = snap.mqtt_devices;
    const list = m.devices;
    const broker = m.broker_connected === null ? null :
      el("p", {}, t("broker") + " ", onOff(m.broker_connected, "connected", "disconnected"));
    fill(cards.mqtt, broker, list.length === 0 ? el("p", { class: "muted" }, t("no_devices")) :
      el("ul", { class: "dash-list" }, ...list.slice(0, MAX_ROWS).map((d) => el("li", { dataset: { device: d.id } },
        dot(d.online), el("strong", {}, d.id), " ", onOff(d.online, "online", "offline"), " ",
        d.adopted ? null : Edge.badge(t("discovered_badge"), "discovered"),
        el("span", { class: "muted" }, " · " + t("last_seen", { ago: ago(d.last_seen_ms) })))), more(list)));
  }

  const renderers = { cloud: renderCloud, alarms: renderAlarms, tags: renderTags, updates: renderUpdates,
    stations: renderStations, boards: renderBoards, kiosks: renderKiosks, mqtt: renderMqtt };
  const renderAll = () => Object.values(renderers).forEach((r) => r());
  renderAll();

  /* A device event: patch the snapshot where the device is, and redraw that card only. */
  function onDevice(d) {
    const s = d.state;
    if (d.kind === "mqtt") {
      const list = snap.mqtt_devices.devices;
      const found = list.find((x) => x.id === d.id);
      if (!s) snap.mqtt_devices.devices = list.filter((x) => x.id !== d.id);
      else if (found) Object.assign(found, s, { last_seen_ms: d.now_ms });
      else list.push({ id: d.id, online: s.online, adopted: s.adopted, last_seen_ms: d.now_ms });
      renderMqtt();
    } else if (d.kind === "kiosk") {
      const k = snap.kiosks.find((x) => x.id === d.id);
      if (k && s) { k.online = s.online; if (!s.online) k.last_seen_ms = d.now_ms; }
      renderKiosks();
    } else if (d.kind === "board") {
      const b = snap.lock_boards.find((x) => x.id === d.id);
      if (b && s) b.reachable = s.reachable;
      renderBoards();
    } else if (d.kind === "station") {
      const b = snap.base_stations.find((x) => x.name === d.id);
      if (b && s) b.connected = s.connected;
      renderStations();
    } else if (d.kind === "cloud") {
      if (s) snap.cloud.connected = s.connected;
      renderCloud();
    } else if (d.kind === "alarm") {
      const key = (a) => `${a.kind}:${a.compartment || ""}`;
      snap.alarms = snap.alarms.filter((a) => key(a) !== d.id);
      if (s) snap.alarms.push(s);
      renderAlarms();
    }
  }

  const source = Edge.live((type, data) => {
    if (type === "dashboard") {
      snap = data;
      skew = snap.now_ms - Date.now();
      renderAll();
    } else if (type === "device") {
      onDevice(data);
    }
    liveBadge.className = "badge ok";
    liveBadge.textContent = t("live");
  });
  source.addEventListener("error", () => {
    liveBadge.className = "badge warn";
    liveBadge.textContent = t("reconnecting");
  });
  // "3 s ago" texts age by themselves: redraw them now and then (the data comes from the stream).
  const timer = setInterval(() => { if (document.body.contains(cards.cloud)) renderAll(); else clearInterval(timer); }, 5000);
  // A language switch re-renders the page: the old stream must not keep drawing into detached cards.
  const observer = new MutationObserver(() => {
    if (!document.body.contains(cards.cloud)) { source.close(); observer.disconnect(); }
  });
  observer.observe(app, { childList: true });
});
