/* The devices page (technician): base stations with their link statistics, shelf tags (search, paging, a
   detail pane with the picture and the actions: find by LED, re-send, unpair), lock boards and compartments,
   kiosks and MQTT devices (reload, reboot, a message), GPIO pins. Everything from /api/devices/...; the open
   tab is read again every few seconds, and at once when the live stream reports a device change. */
"use strict";

Edge.addStrings({
  en: {
    dev_tab_stations: "Base stations", dev_tab_tags: "Tags", dev_tab_boards: "Lock boards", dev_tab_kiosks: "Kiosks & MQTT devices",
    dev_tab_gpio: "GPIO", dev_name: "Name", dev_url: "Port", dev_state: "State", dev_connected: "connected",
    dev_disconnected: "not connected", dev_kind_serial: "serial", dev_kind_wifi: "Wi-Fi labels", dev_tags: "Tags",
    dev_frames: "Frames sent / received", dev_retransmits: "Retransmits", dev_crc: "CRC errors", dev_bad_frames: "Bad frames",
    dev_resets: "Base-station resets", dev_reconnects: "Reconnects", dev_queue: "Queue (urgent / bulk)",
    dev_transfers: "Transfers (in flight / done / failed)", dev_firmware: "Firmware", dev_last_error: "Last error",
    dev_no_stations: "No base station configured.", dev_search: "Search id, product, scan code", dev_all_stations: "All base stations",
    dev_all_tags: "All tags", dev_paired: "Paired", dev_unpaired: "Not paired", dev_tag: "Tag", dev_type: "Type",
    dev_product: "Product", dev_battery: "Battery", dev_signal: "Signal", dev_checkin: "Last check-in", dev_job: "Pending update",
    dev_page: "{from}–{to} of {total}", dev_prev: "← Previous", dev_next: "Next →", dev_no_tags: "No tag matches.",
    dev_select_tag: "Choose a tag to see its picture and act on it.", dev_shows: "Shows now", dev_will_show: "Will show",
    dev_no_picture: "No picture known yet.", dev_scan_code: "Scan code", dev_station: "Base station", dev_temperature: "Temperature",
    dev_flash: "Flash LED", dev_resend: "Re-send picture", dev_unpair: "Unpair", dev_colour: "Colour",
    dev_colour_green: "green", dev_colour_red: "red", dev_colour_blue: "blue", dev_colour_white: "white",
    dev_flashed: "The tag's LED is flashing.", dev_resent: "{queued} queued, {unchanged} already showing it.",
    dev_unpaired_done: "The tag is no longer paired.", dev_confirm_unpair: "Remove the product from tag {id}?",
    dev_job_queued: "queued", dev_job_sending: "sending", dev_job_failed: "failed", dev_none: "—",
    dev_board: "Board", dev_kind: "Kind", dev_bus: "Bus", dev_locks: "Locks", dev_bus_stats: "Requests / timeouts / retries",
    dev_no_boards: "No lock board configured.", dev_compartments: "Compartments", dev_to_lockers: "Open the lockers page →",
    dev_door: "Door", dev_item: "Item", dev_in_service: "In service", dev_size: "Size", dev_place: "Row / column",
    dev_open: "open", dev_closed: "closed", dev_unknown: "unknown", dev_inside: "inside", dev_empty: "empty",
    dev_kiosks: "Kiosks", dev_kiosk: "Kiosk", dev_online: "online", dev_offline: "offline", dev_last_seen: "Last seen",
    dev_bound: "Devices", dev_reload: "Reload", dev_reboot: "Reboot", dev_message: "Message", dev_sent: "Sent.",
    dev_mqtt: "MQTT devices", dev_device: "Device", dev_model: "Model", dev_adopted: "adopted", dev_discovered: "discovered",
    dev_broker_down: "The agent is not connected to the in-store broker.", dev_no_broker: "No in-store broker configured.",
    dev_no_kiosks: "No kiosk configured.", dev_no_devices: "No device heard yet.", dev_message_title: "Message to {id}",
    dev_message_text: "Text", dev_message_seconds: "Seconds", dev_send: "Send", dev_cancel: "Cancel",
    dev_confirm_reboot: "Restart device {id}?", dev_gpio_boards: "GPIO lock boards", dev_gpio_alarm: "Alarm LED and buzzer",
    dev_no_gpio: "No GPIO peripherals configured.", dev_lock_pin: "Lock pin", dev_door_pin: "Door pin", dev_item_pin: "Item pin",
    dev_released: "released", dev_latched: "latched", dev_led: "LED", dev_buzzer: "Buzzer", dev_alarm: "Alarm",
    dev_on: "on", dev_off: "off", dev_refresh: "Refresh",
  },
  "zh-CN": {
    dev_tab_stations: "基站", dev_tab_tags: "价签", dev_tab_boards: "锁控板", dev_tab_kiosks: "自助终端与 MQTT 设备",
    dev_tab_gpio: "GPIO", dev_name: "名称", dev_url: "端口", dev_state: "状态", dev_connected: "已连接",
    dev_disconnected: "未连接", dev_kind_serial: "串口", dev_kind_wifi: "Wi-Fi 价签", dev_tags: "价签数",
    dev_frames: "发送 / 接收帧", dev_retransmits: "重传", dev_crc: "CRC 错误", dev_bad_frames: "错误帧",
    dev_resets: "基站复位", dev_reconnects: "重新连接", dev_queue: "队列（紧急 / 批量）",
    dev_transfers: "传输（进行中 / 完成 / 失败）", dev_firmware: "固件", dev_last_error: "最近错误",
    dev_no_stations: "未配置基站。", dev_search: "搜索编号、商品、扫码码", dev_all_stations: "全部基站",
    dev_all_tags: "全部价签", dev_paired: "已绑定", dev_unpaired: "未绑定", dev_tag: "价签", dev_type: "型号",
    dev_product: "商品", dev_battery: "电量", dev_signal: "信号", dev_checkin: "最近上报", dev_job: "待更新",
    dev_page: "第 {from}–{to} 个，共 {total} 个", dev_prev: "← 上一页", dev_next: "下一页 →", dev_no_tags: "没有匹配的价签。",
    dev_select_tag: "选择一个价签以查看画面并操作。", dev_shows: "当前显示", dev_will_show: "即将显示",
    dev_no_picture: "尚无画面。", dev_scan_code: "扫码码", dev_station: "基站", dev_temperature: "温度",
    dev_flash: "闪灯查找", dev_resend: "重新发送画面", dev_unpair: "解除绑定", dev_colour: "颜色",
    dev_colour_green: "绿", dev_colour_red: "红", dev_colour_blue: "蓝", dev_colour_white: "白",
    dev_flashed: "价签指示灯正在闪烁。", dev_resent: "已排队 {queued} 个，{unchanged} 个已是最新画面。",
    dev_unpaired_done: "价签已解除绑定。", dev_confirm_unpair: "要解除价签 {id} 与商品的绑定吗？",
    dev_job_queued: "排队中", dev_job_sending: "发送中", dev_job_failed: "失败", dev_none: "—",
    dev_board: "锁控板", dev_kind: "类型", dev_bus: "总线", dev_locks: "锁数", dev_bus_stats: "请求 / 超时 / 重试",
    dev_no_boards: "未配置锁控板。", dev_compartments: "柜格", dev_to_lockers: "打开储物柜页面 →",
    dev_door: "柜门", dev_item: "物品", dev_in_service: "可用", dev_size: "尺寸", dev_place: "行 / 列",
    dev_open: "打开", dev_closed: "关闭", dev_unknown: "未知", dev_inside: "有", dev_empty: "空",
    dev_kiosks: "自助终端", dev_kiosk: "终端", dev_online: "在线", dev_offline: "离线", dev_last_seen: "最近在线",
    dev_bound: "绑定设备", dev_reload: "重新加载", dev_reboot: "重启", dev_message: "发送消息", dev_sent: "已发送。",
    dev_mqtt: "MQTT 设备", dev_device: "设备", dev_model: "型号", dev_adopted: "已接入", dev_discovered: "待接入",
    dev_broker_down: "代理未连接店内消息服务器。", dev_no_broker: "未配置店内消息服务器。",
    dev_no_kiosks: "未配置自助终端。", dev_no_devices: "尚未发现设备。", dev_message_title: "发给 {id} 的消息",
    dev_message_text: "内容", dev_message_seconds: "显示秒数", dev_send: "发送", dev_cancel: "取消",
    dev_confirm_reboot: "要重启设备 {id} 吗？", dev_gpio_boards: "GPIO 锁控板", dev_gpio_alarm: "告警灯与蜂鸣器",
    dev_no_gpio: "未配置 GPIO 外设。", dev_lock_pin: "锁引脚", dev_door_pin: "门磁引脚", dev_item_pin: "物品传感器引脚",
    dev_released: "已释放", dev_latched: "已锁", dev_led: "指示灯", dev_buzzer: "蜂鸣器", dev_alarm: "告警",
    dev_on: "开", dev_off: "关", dev_refresh: "刷新",
  },
});

Edge.page(async (app) => {
  const { el, t } = Edge;
  const TABS = ["stations", "tags", "boards", "kiosks", "gpio"];
  const PAGE = 50;
  let tab = TABS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "stations";
  const tags = { q: "", station: "", paired: "", offset: 0, selected: null };
  const dash = (v) => (v === null || v === undefined || v === "" ? t("dev_none") : String(v));
  const badge = (ok, yes, no) => Edge.badge(t(ok ? yes : no), ok ? "ok" : "bad");
  const table = (heads, rows, id) => el("div", { class: "table-wrap" },
    el("table", { id }, el("thead", {}, el("tr", {}, heads.map((h) => el("th", {}, h)))), el("tbody", {}, rows)));
  const kv = (pairs) => el("dl", { class: "kv" }, pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const act = async (work, okMessage) => {
    try {
      const result = await work();
      Edge.flash(typeof okMessage === "function" ? okMessage(result) : okMessage);
      await show();
    } catch (e) {
      Edge.flash(e.message, true);
    }
  };

  /* A small modal form (native <dialog>): resolves to the values, or null when cancelled. */
  const ask = (title, fields) => new Promise((resolve) => {
    const inputs = fields.map((f) => el("input", { name: f.name, type: f.type || "text", required: true,
      maxlength: f.max || 200, min: f.min, value: f.value === undefined ? "" : f.value }));
    const form = el("form", { method: "dialog", class: "stack" }, el("h2", {}, title),
      fields.map((f, i) => el("label", {}, f.label, inputs[i])),
      el("div", { class: "actions" }, el("button", { class: "action", type: "submit", value: "ok" }, t("dev_send")),
        el("button", { class: "action secondary", type: "button", onclick: () => dialog.close("cancel") }, t("dev_cancel"))));
    const dialog = el("dialog", { class: "card", id: "ask-dialog" }, form);
    dialog.addEventListener("close", () => {
      const values = Object.fromEntries(fields.map((f, i) => [f.name, inputs[i].value]));
      dialog.remove();
      resolve(dialog.returnValue === "ok" ? values : null);
    });
    document.body.append(dialog);
    dialog.showModal();
  });

  const tabBar = el("div", { class: "tabs", role: "tablist" });
  const body = el("div", { id: "devices-body" });
  app.append(el("h1", {}, t("nav_devices")), tabBar, body);

  const renderTabs = () => tabBar.replaceChildren(...TABS.map((name) => el("button", {
    role: "tab", id: "tab-" + name, "aria-selected": String(name === tab),
    onclick: () => { tab = name; location.hash = name; renderTabs(); show(); },
  }, t("dev_tab_" + name))));

  /* -- base stations ------------------------------------------------------------------------- */
  async function stations() {
    const data = await Edge.api("GET", "/api/devices/base-stations");
    if (!data.base_stations.length) return [el("p", { class: "muted" }, t("dev_no_stations"))];
    return [el("div", { class: "grid" }, data.base_stations.map((s) => {
      const l = s.link;
      const rows = [[t("dev_state"), badge(s.connected, "dev_connected", "dev_disconnected")],
        [t("dev_url"), s.url ? el("span", { class: "mono" }, s.url) : t("dev_kind_wifi")], [t("dev_tags"), String(s.tags)]];
      if (l) {
        rows.push([t("dev_frames"), `${l.frames_sent} / ${l.frames_received}`], [t("dev_retransmits"), String(l.retransmits)],
          [t("dev_crc"), String(l.crc_errors)], [t("dev_bad_frames"), String(l.bad_frames)], [t("dev_resets"), String(l.peer_resets)],
          [t("dev_reconnects"), String(l.reconnects)], [t("dev_queue"), `${l.queue_urgent} / ${l.queue_bulk}`],
          [t("dev_transfers"), `${l.transfers_in_flight} / ${l.transfers_done} / ${l.transfers_failed}`],
          [t("dev_firmware"), dash(s.firmware)], [t("dev_last_error"), dash(s.last_error)]);
      }
      return el("section", { class: "card", dataset: { station: s.name } }, el("h2", {}, s.name, " ",
        Edge.badge(t(s.kind === "serial" ? "dev_kind_serial" : "dev_kind_wifi"))), kv(rows));
    }))];
  }

  /* -- tags ---------------------------------------------------------------------------------- */
  const jobBadge = (job) => (job ? Edge.badge(t("dev_job_" + job.state), job.state === "failed" ? "bad" : "warn") : t("dev_none"));

  async function tagList() {
    const params = new URLSearchParams({ limit: PAGE, offset: tags.offset });
    if (tags.q) params.set("q", tags.q);
    if (tags.station) params.set("station", tags.station);
    if (tags.paired) params.set("paired", tags.paired);
    const [page, st] = await Promise.all([Edge.api("GET", "/api/devices/tags?" + params),
      Edge.api("GET", "/api/devices/base-stations")]);
    const search = el("input", { type: "search", id: "tag-search", placeholder: t("dev_search"), value: tags.q });
    let timer;
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => { tags.q = search.value.trim(); tags.offset = 0; show(); }, 300);
    });
    const station = el("select", { id: "tag-station", onchange: (e) => { tags.station = e.target.value; tags.offset = 0; show(); } },
      el("option", { value: "" }, t("dev_all_stations")),
      st.base_stations.map((s) => el("option", { value: s.name, selected: s.name === tags.station }, s.name)));
    const paired = el("select", { id: "tag-paired", onchange: (e) => { tags.paired = e.target.value; tags.offset = 0; show(); } },
      [["", "dev_all_tags"], ["true", "dev_paired"], ["false", "dev_unpaired"]].map(([v, k]) =>
        el("option", { value: v, selected: v === tags.paired }, t(k))));
    const rows = page.tags.map((tag) => el("tr", {
      class: tag.tag_id === tags.selected ? "selected" : null, dataset: { tag: tag.tag_id }, tabindex: "0",
      onclick: () => { tags.selected = tag.tag_id; show(); },
    },
    el("td", { class: "mono" }, tag.tag_id), el("td", {}, tag.type),
    el("td", {}, tag.product ? `${tag.product.name || ""} (${tag.product.sku})` : t("dev_none")),
    el("td", { class: "num" }, tag.battery_mv === null ? t("dev_none") : `${tag.battery_mv} mV`),
    el("td", { class: "num" }, tag.rssi === null ? t("dev_none") : `${tag.rssi} dBm / ${tag.lqi}`),
    el("td", {}, Edge.ago(tag.last_seen_ms)), el("td", {}, jobBadge(tag.job))));
    const to = Math.min(page.offset + page.tags.length, page.total);
    const pager = el("div", { class: "pager" },
      el("button", { class: "action secondary", id: "tags-prev", disabled: page.offset === 0,
        onclick: () => { tags.offset = Math.max(0, tags.offset - PAGE); show(); } }, t("dev_prev")),
      el("span", { class: "muted" }, t("dev_page", { from: page.total ? page.offset + 1 : 0, to, total: page.total })),
      el("button", { class: "action secondary", id: "tags-next", disabled: to >= page.total,
        onclick: () => { tags.offset += PAGE; show(); } }, t("dev_next")));
    const list = el("div", {}, el("div", { class: "toolbar" }, search, station, paired),
      page.tags.length ? table([t("dev_tag"), t("dev_type"), t("dev_product"), t("dev_battery"), t("dev_signal"),
        t("dev_checkin"), t("dev_job")], rows, "tags-table") : el("p", { class: "muted" }, t("dev_no_tags")), pager);
    const detail = el("section", { class: "card", id: "tag-detail" });
    if (tags.selected) await tagDetail(detail, tags.selected);
    else detail.append(el("p", { class: "muted" }, t("dev_select_tag")));
    const focus = document.activeElement && document.activeElement.id === "tag-search";
    setTimeout(() => { if (focus) { const s = document.getElementById("tag-search"); s.focus(); s.setSelectionRange(s.value.length, s.value.length); } });
    return [el("div", { class: "devices-split" }, list, detail)];
  }

  async function tagDetail(box, id) {
    let tag;
    try {
      tag = await Edge.api("GET", "/api/devices/tags/" + id);
    } catch (e) {
      box.append(el("p", { class: "error-text" }, e.message));
      return;
    }
    const stamp = Date.now();
    const picture = (which, label) => el("figure", { class: "tag-figure" },
      el("img", { class: "preview", id: "tag-preview-" + which, alt: label,
        src: `/api/devices/tags/${id}/preview.png?picture=${which}&t=${stamp}`,
        onerror: (e) => e.target.replaceWith(el("p", { class: "muted" }, t("dev_no_picture"))) }),
      el("figcaption", { class: "muted" }, label));
    const colour = el("select", { id: "flash-colour", "aria-label": t("dev_colour") },
      ["green", "red", "blue", "white"].map((c) => el("option", { value: c }, t("dev_colour_" + c))));
    box.append(
      el("h2", { class: "mono" }, tag.tag_id),
      el("div", { class: "tag-pictures" }, picture("shown", t("dev_shows")), tag.job && tag.pending_hash ? picture("pending", t("dev_will_show")) : null),
      kv([[t("dev_product"), tag.product ? `${tag.product.name || ""} (${tag.product.sku})` : t("dev_none")],
        [t("dev_type"), `${tag.type}${tag.size ? ` · ${tag.size.width}×${tag.size.height}` : ""}`],
        [t("dev_station"), el("span", {}, dash(tag.base_station), " ", badge(tag.station_connected, "dev_connected", "dev_disconnected"))],
        [t("dev_battery"), tag.battery_mv === null ? t("dev_none") : `${tag.battery_mv} mV`],
        [t("dev_signal"), tag.rssi === null ? t("dev_none") : `RSSI ${tag.rssi} dBm · LQI ${tag.lqi}`],
        [t("dev_temperature"), tag.temperature_c === null ? t("dev_none") : `${tag.temperature_c} °C`],
        [t("dev_checkin"), Edge.ago(tag.last_seen_ms)], [t("dev_job"), jobBadge(tag.job)],
        [t("dev_scan_code"), tag.scan_url ? el("a", { href: tag.scan_url, class: "mono", target: "_blank", rel: "noopener" }, tag.scan_code) : tag.scan_code]]),
      el("div", { class: "actions tag-actions" }, colour,
        el("button", { class: "action", id: "tag-flash", onclick: () => act(() => Edge.api("POST", `/api/devices/tags/${id}/flash`, { colour: colour.value, count: 5 }), t("dev_flashed")) }, t("dev_flash")),
        el("button", { class: "action secondary", id: "tag-resend", onclick: () => act(() => Edge.api("POST", `/api/devices/tags/${id}/resend`), (r) => t("dev_resent", r)) }, t("dev_resend")),
        tag.product ? el("button", { class: "action danger", id: "tag-unpair", onclick: () => {
          if (confirm(t("dev_confirm_unpair", { id }))) act(() => Edge.api("POST", `/api/devices/tags/${id}/unpair`), t("dev_unpaired_done"));
        } }, t("dev_unpair")) : null));
  }

  /* -- lock boards --------------------------------------------------------------------------- */
  async function boards() {
    const data = await Edge.api("GET", "/api/devices/lockers");
    if (!data.boards.length) return [el("p", { class: "muted" }, t("dev_no_boards"))];
    const boardRows = data.boards.map((b) => el("tr", { dataset: { board: b.board_id } },
      el("td", { class: "mono" }, b.board_id), el("td", {}, b.kind), el("td", {}, b.bus ? `${b.bus} (${b.url})` : t("dev_none")),
      el("td", { class: "num" }, String(b.locks)), el("td", {}, badge(b.connected, "dev_connected", "dev_disconnected")),
      el("td", { class: "num" }, b.bus_stats ? `${b.bus_stats.requests} / ${b.bus_stats.timeouts} / ${b.bus_stats.retries}` : t("dev_none"))));
    const comps = data.banks.flatMap((bank) => bank.compartments).map((c) => el("tr", { dataset: { compartment: c.id } },
      el("td", { class: "mono" }, c.id), el("td", {}, `${c.board} #${c.lock}`), el("td", {}, c.size), el("td", {}, `${c.row} / ${c.column}`),
      el("td", {}, c.door === null ? t("dev_unknown") : Edge.badge(t(c.door === "open" ? "dev_open" : "dev_closed"), c.door === "open" ? "warn" : "ok")),
      el("td", {}, c.item === null ? t("dev_none") : t(c.item ? "dev_inside" : "dev_empty")),
      el("td", {}, c.enabled ? Edge.badge(t("yes"), "ok") : Edge.badge(c.oos_reason || t("no"), "bad"))));
    return [
      table([t("dev_board"), t("dev_kind"), t("dev_bus"), t("dev_locks"), t("dev_state"), t("dev_bus_stats")], boardRows, "boards-table"),
      el("div", { class: "toolbar dev-gap" }, el("h2", {}, t("dev_compartments")), el("a", { href: "/ui/lockers" }, t("dev_to_lockers"))),
      table([t("nav_lockers"), t("dev_board"), t("dev_size"), t("dev_place"), t("dev_door"), t("dev_item"), t("dev_in_service")], comps, "compartments-table"),
    ];
  }

  /* -- kiosks and MQTT devices --------------------------------------------------------------- */
  async function message(path, id, withSeconds) {
    const fields = [{ name: "text", label: t("dev_message_text") }];
    if (withSeconds) fields.push({ name: "seconds", label: t("dev_message_seconds"), type: "number", min: 1, value: 10 });
    const values = await ask(t("dev_message_title", { id }), fields);
    if (!values) return;
    const body = withSeconds ? { text: values.text, seconds: Number(values.seconds) } : { text: values.text };
    await act(() => Edge.api("POST", path, body), t("dev_sent"));
  }

  async function kiosks() {
    const data = await Edge.api("GET", "/api/devices/kiosks");
    const kioskRows = data.kiosks.map((k) => el("tr", { dataset: { kiosk: k.id } },
      el("td", {}, el("a", { href: `/kiosk/${encodeURIComponent(k.id)}`, target: "_blank", rel: "noopener" }, k.name || k.id)),
      el("td", {}, badge(k.online, "dev_online", "dev_offline")), el("td", {}, Edge.ago(k.last_seen_ms)),
      el("td", { class: "mono" }, k.devices.join(", ") || t("dev_none")),
      el("td", {}, el("div", { class: "actions" },
        el("button", { class: "action secondary", onclick: () => act(() => Edge.api("POST", `/api/devices/kiosks/${encodeURIComponent(k.id)}/reload`), t("dev_sent")) }, t("dev_reload")),
        el("button", { class: "action secondary", onclick: () => message(`/api/devices/kiosks/${encodeURIComponent(k.id)}/message`, k.name || k.id, false) }, t("dev_message"))))));
    const deviceRows = data.devices.map((d) => {
      const path = `/api/devices/mqtt/${encodeURIComponent(d.device_id)}`;
      const usable = d.adopted && d.online !== false;
      return el("tr", { dataset: { device: d.device_id } },
        el("td", { class: "mono" }, d.device_id), el("td", {}, dash(d.kind)), el("td", {}, [d.model, d.fw].filter(Boolean).join(" · ") || t("dev_none")),
        el("td", {}, Edge.badge(t(d.adopted ? "dev_adopted" : "dev_discovered"), d.adopted ? "" : "discovered")),
        el("td", {}, d.online === null ? t("dev_unknown") : badge(d.online, "dev_online", "dev_offline")),
        el("td", {}, Edge.ago(d.last_seen_ms)), el("td", {}, dash(d.kiosk_id)),
        el("td", {}, el("div", { class: "actions" },
          el("button", { class: "action secondary", disabled: !usable, onclick: () => act(() => Edge.api("POST", path + "/reload"), t("dev_sent")) }, t("dev_reload")),
          el("button", { class: "action secondary", disabled: !usable, onclick: () => message(path + "/message", d.device_id, true) }, t("dev_message")),
          el("button", { class: "action danger", disabled: !usable, onclick: () => {
            if (confirm(t("dev_confirm_reboot", { id: d.device_id }))) act(() => Edge.api("POST", path + "/reboot"), t("dev_sent"));
          } }, t("dev_reboot")))));
    });
    const broker = data.broker === null ? el("p", { class: "muted" }, t("dev_no_broker"))
      : data.broker.connected ? null : el("p", { class: "error-text" }, t("dev_broker_down"));
    return [
      el("h2", {}, t("dev_kiosks")),
      kioskRows.length ? table([t("dev_kiosk"), t("dev_state"), t("dev_last_seen"), t("dev_bound"), ""], kioskRows, "kiosks-table")
        : el("p", { class: "muted" }, t("dev_no_kiosks")),
      el("h2", { class: "dev-gap" }, t("dev_mqtt")), broker,
      deviceRows.length ? table([t("dev_device"), t("dev_kind"), t("dev_model"), "", t("dev_state"), t("dev_last_seen"), t("dev_kiosk"), ""], deviceRows, "mqtt-table")
        : data.broker === null ? null : el("p", { class: "muted" }, t("dev_no_devices")),
    ];
  }

  /* -- GPIO ---------------------------------------------------------------------------------- */
  async function gpio() {
    const data = await Edge.api("GET", "/api/devices/gpio");
    if (!data.boards.length && !data.alarm_signals.length) return [el("p", { class: "muted" }, t("dev_no_gpio"))];
    const onOff = (v) => (v === null ? t("dev_none") : Edge.badge(t(v ? "dev_on" : "dev_off"), v ? "warn" : ""));
    return [
      ...data.boards.map((b) => el("section", { class: "card dev-gap", dataset: { gpio: b.board_id } },
        el("h2", {}, `${t("dev_gpio_boards")}: ${b.board_id}`),
        table([t("dev_locks"), t("dev_lock_pin"), t("dev_door_pin"), t("dev_item_pin"), t("dev_state"), t("dev_door"), t("dev_item")],
          b.locks.map((l) => el("tr", {}, el("td", {}, String(l.lock)), el("td", { class: "mono" }, `GPIO${l.lock_pin}`),
            el("td", { class: "mono" }, `GPIO${l.door_pin}`), el("td", { class: "mono" }, l.item_pin === null ? t("dev_none") : `GPIO${l.item_pin}`),
            el("td", {}, t(l.released ? "dev_released" : "dev_latched")), el("td", {}, t(l.door_closed ? "dev_closed" : "dev_open")),
            el("td", {}, l.item === null ? t("dev_none") : t(l.item ? "dev_inside" : "dev_empty"))))))),
      ...data.alarm_signals.map((s) => el("section", { class: "card dev-gap" }, el("h2", {}, t("dev_gpio_alarm")),
        kv([[t("dev_led"), s.led_pin === null ? t("dev_none") : el("span", {}, `GPIO${s.led_pin} `, onOff(s.led))],
          [t("dev_buzzer"), s.buzzer_pin === null ? t("dev_none") : el("span", {}, `GPIO${s.buzzer_pin} `, onOff(s.buzzer))],
          [t("dev_alarm"), onOff(s.alarm_on)]]))),
    ];
  }

  const RENDER = { stations, tags: tagList, boards, kiosks, gpio };
  let busy = false;
  async function show() {
    if (busy) return;
    busy = true;
    try {
      const parts = await RENDER[tab]();
      if (document.querySelector("dialog[open]")) return; // do not pull the page from under an open form
      body.replaceChildren(...parts.filter(Boolean));
      body.dataset.tab = tab;
    } catch (e) {
      Edge.flash(e.message, true);
    } finally {
      busy = false;
    }
  }

  renderTabs();
  await show();
  // Edge.page renders again on a language switch: one timer and one live stream per page, not per render.
  clearInterval(window.devicesTimer);
  if (window.devicesLive) window.devicesLive.close();
  // The tag list is not re-read on a timer: it would move under the technician's cursor while searching.
  window.devicesTimer = setInterval(() => { if (tab !== "tags" && !document.hidden) show(); }, 5000);
  let lastLive = 0;
  window.devicesLive = Edge.live((type) => {
    if (type !== "device" || tab === "tags" || Date.now() - lastLive < 1000) return;
    lastLive = Date.now();
    show();
  });
});
