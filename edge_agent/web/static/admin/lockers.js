/* The lockers page (staff and up): each bank's compartments as a grid laid out by row and column, with door
   and item state live (the live stream's `compartment` and `alarm` events trigger a read, and the page reads
   /api/devices/lockers every 2 s anyway), open alarms and parcels waiting for retrieval. Technicians also
   take a compartment out of service and back, and test-open a door with a reason (audited). Pickup codes are
   never shown: the API has none to give. */
"use strict";

Edge.addStrings({
  en: {
    lk_alarms: "Open alarms", lk_no_alarms: "No open alarms.", lk_retrievals: "Waiting for retrieval",
    lk_no_retrievals: "No parcel is waiting to be taken out.", lk_bank: "Bank {bank}", lk_no_lockers: "This store has no lockers.",
    lk_open: "open", lk_closed: "closed", lk_unknown: "no reading", lk_item: "parcel inside", lk_empty: "empty",
    lk_out_of_service: "out of service", lk_test_open: "Test-open", lk_disable: "Take out of service", lk_enable: "Put in service",
    lk_reason: "Reason", lk_test_title: "Test-open door {id}", lk_disable_title: "Take door {id} out of service",
    lk_confirm: "Confirm", lk_cancel: "Cancel", lk_opened: "Door {id}: {result}.", lk_disabled: "Door {id} is out of service.",
    lk_enabled: "Door {id} is in service again.", lk_order: "Order", lk_since: "Since", lk_hold_until: "Held until",
    lk_state_loading: "loading", lk_state_ready: "ready for pickup", lk_state_retrieval: "to retrieve",
    lk_result_opened: "opened", lk_result_not_opened: "did not open", lk_result_unknown: "no answer from the board",
    lk_alarm_out_of_service: "Door {c} is out of service ({reason}).", lk_alarm_door_forced: "Door {c} was opened without a command.",
    lk_alarm_door_left_open: "Door {c} has been left open.", lk_alarm_code_guessing: "Unusually many wrong pickup codes were typed.",
    lk_opening_test: "test", lk_opening_load: "loading", lk_opening_collect: "collecting", lk_opening_retrieval: "retrieval",
    lk_alarm_badge: "alarm", lk_size: "size {size}", lk_boards: "Lock boards", lk_board_down: "Lock board {id} is not reachable.",
  },
  "zh-CN": {
    lk_alarms: "未处理告警", lk_no_alarms: "没有未处理的告警。", lk_retrievals: "待取回",
    lk_no_retrievals: "没有需要取回的包裹。", lk_bank: "{bank} 组柜", lk_no_lockers: "本店没有储物柜。",
    lk_open: "打开", lk_closed: "关闭", lk_unknown: "无读数", lk_item: "有包裹", lk_empty: "空",
    lk_out_of_service: "已停用", lk_test_open: "测试开门", lk_disable: "停用", lk_enable: "启用",
    lk_reason: "原因", lk_test_title: "测试打开 {id} 号柜门", lk_disable_title: "停用 {id} 号柜门",
    lk_confirm: "确认", lk_cancel: "取消", lk_opened: "{id} 号柜门：{result}。", lk_disabled: "{id} 号柜门已停用。",
    lk_enabled: "{id} 号柜门已重新启用。", lk_order: "订单", lk_since: "开始时间", lk_hold_until: "保留至",
    lk_state_loading: "正在存件", lk_state_ready: "待取件", lk_state_retrieval: "待取回",
    lk_result_opened: "已打开", lk_result_not_opened: "未打开", lk_result_unknown: "锁控板无应答",
    lk_alarm_out_of_service: "{c} 号柜门已停用（{reason}）。", lk_alarm_door_forced: "{c} 号柜门未经指令被打开。",
    lk_alarm_door_left_open: "{c} 号柜门长时间未关。", lk_alarm_code_guessing: "取件码错误次数异常。",
    lk_opening_test: "测试", lk_opening_load: "存件中", lk_opening_collect: "取件中", lk_opening_retrieval: "取回中",
    lk_alarm_badge: "告警", lk_size: "{size} 号", lk_boards: "锁控板", lk_board_down: "锁控板 {id} 无法连接。",
  },
});

Edge.page(async (app) => {
  const { el, t } = Edge;
  const technician = Edge.can("technician");
  const alarmsBox = el("section", { class: "card", id: "lk-alarms" });
  const retrievalsBox = el("section", { class: "card", id: "lk-retrievals" });
  const banksBox = el("div", { id: "lk-banks" });
  const boardsBox = el("div", { id: "lk-boards" });
  app.append(el("h1", {}, t("nav_lockers")), boardsBox, el("div", { class: "grid lk-top" }, alarmsBox, retrievalsBox), banksBox);

  /* Ask for a reason in a modal form (native <dialog>); resolves to the text, or null when cancelled. */
  const askReason = (title) => new Promise((resolve) => {
    const input = el("input", { name: "reason", id: "lk-reason", required: true, maxlength: 200, autocomplete: "off" });
    const dialog = el("dialog", { class: "card", id: "lk-dialog" },
      el("form", { method: "dialog", class: "stack" }, el("h2", {}, title), el("label", {}, t("lk_reason"), input),
        el("div", { class: "actions" }, el("button", { class: "action", type: "submit", value: "ok", id: "lk-confirm" }, t("lk_confirm")),
          el("button", { class: "action secondary", type: "button", onclick: () => dialog.close("cancel") }, t("lk_cancel")))));
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "ok" && input.value.trim() ? input.value.trim() : null);
    });
    document.body.append(dialog);
    dialog.showModal();
  });

  const act = async (work, message) => {
    try {
      const result = await work();
      Edge.flash(typeof message === "function" ? message(result) : message);
    } catch (e) {
      Edge.flash(e.message, true);
    }
    await refresh();
  };

  const testOpen = async (c) => {
    const reason = await askReason(t("lk_test_title", { id: c.id }));
    if (reason === null) return;
    await act(() => Edge.api("POST", `/api/devices/lockers/compartments/${encodeURIComponent(c.id)}/test-open`, { reason }),
      (r) => t("lk_opened", { id: c.id, result: t("lk_result_" + r.result) }));
  };
  const setService = async (c, enable) => {
    const path = `/api/devices/lockers/compartments/${encodeURIComponent(c.id)}/${enable ? "enable" : "disable"}`;
    if (enable) return act(() => Edge.api("POST", path), t("lk_enabled", { id: c.id }));
    const reason = await askReason(t("lk_disable_title", { id: c.id }));
    if (reason !== null) await act(() => Edge.api("POST", path, { reason }), t("lk_disabled", { id: c.id }));
  };

  function compartmentCell(c) {
    const door = c.door === null ? Edge.badge(t("lk_unknown")) : Edge.badge(t(c.door === "open" ? "lk_open" : "lk_closed"), c.door === "open" ? "warn" : "ok");
    const item = c.item === null ? null : el("span", { class: "muted" }, t(c.item ? "lk_item" : "lk_empty"));
    const classes = ["card", "lk-cell"];
    if (!c.enabled) classes.push("lk-oos");
    if (c.door === "open") classes.push("lk-open");
    return el("div", { class: classes.join(" "), dataset: { compartment: c.id, door: c.door || "unknown" } },
    el("div", { class: "lk-head" }, el("strong", {}, c.id), el("span", { class: "muted" }, t("lk_size", { size: c.size }))),
    el("div", { class: "actions" }, door, item),
    c.enabled ? null : el("div", {}, Edge.badge(`${t("lk_out_of_service")}: ${c.oos_reason || ""}`, "bad")),
    c.opening ? el("div", {}, Edge.badge(t("lk_opening_" + c.opening), "warn")) : null,
    c.pickup ? el("div", { class: "lk-pickup" }, el("span", { class: "mono" }, c.pickup.order_id), " · ", t("lk_state_" + c.pickup.state)) : null,
    technician ? el("div", { class: "actions lk-actions" },
      el("button", { class: "action secondary lk-test", onclick: () => testOpen(c) }, t("lk_test_open")),
      el("button", { class: c.enabled ? "action secondary lk-disable" : "action lk-enable", onclick: () => setService(c, !c.enabled) },
        t(c.enabled ? "lk_disable" : "lk_enable"))) : null);
  }

  function render(data) {
    if (!data.enabled) {
      banksBox.replaceChildren(el("p", { class: "muted" }, t("lk_no_lockers")));
      alarmsBox.hidden = retrievalsBox.hidden = true;
      return;
    }
    const reasons = new Map(data.banks.flatMap((b) => b.compartments).map((c) => [c.id, c.oos_reason]));
    boardsBox.replaceChildren(...data.boards.filter((b) => !b.connected).map((b) =>
      el("p", { class: "flash error" }, t("lk_board_down", { id: b.board_id }))));
    alarmsBox.replaceChildren(el("h2", {}, t("lk_alarms")), data.alarms.length
      ? el("ul", { class: "dash-list" }, data.alarms.map((a) => el("li", { dataset: { alarm: a.kind } }, Edge.badge(t("lk_alarm_badge"), "alarm"), " ",
        t("lk_alarm_" + a.kind, { c: a.compartment, reason: reasons.get(a.compartment) || "" }),
        a.kind === "out_of_service" ? null : a.since_ms ? el("span", { class: "muted" }, " · ", Edge.ago(a.since_ms)) : null)))
      : el("p", { class: "muted" }, t("lk_no_alarms")));
    retrievalsBox.replaceChildren(el("h2", {}, t("lk_retrievals")), data.retrievals.length
      ? el("table", { id: "lk-retrieval-table" }, el("thead", {}, el("tr", {}, el("th", {}, t("lk_order")), el("th", {}, t("nav_lockers")),
        el("th", {}, t("lk_hold_until")))), el("tbody", {}, data.retrievals.map((r) => el("tr", {},
        el("td", { class: "mono" }, r.order_id), el("td", {}, r.compartment), el("td", {}, Edge.time(r.hold_until_ms))))))
      : el("p", { class: "muted" }, t("lk_no_retrievals")));
    banksBox.replaceChildren(...data.banks.map((bank) => {
      const columns = Math.max(...bank.compartments.map((c) => c.column));
      const grid = el("div", { class: "lk-grid lk-cols-" + Math.min(columns, 12) });
      // Cells go where the doors are: row by row from the top, each in its column (gaps stay empty).
      const at = new Map(bank.compartments.map((c) => [`${c.row}:${c.column}`, c]));
      const rows = Math.max(...bank.compartments.map((c) => c.row));
      for (let r = 1; r <= rows; r++) {
        for (let col = 1; col <= Math.min(columns, 12); col++) {
          const c = at.get(`${r}:${col}`);
          grid.append(c ? compartmentCell(c) : el("div", { class: "lk-gap" }));
        }
      }
      const extra = bank.compartments.filter((c) => c.column > 12).map(compartmentCell);
      return el("section", { class: "lk-bank", dataset: { bank: bank.bank } }, el("h2", {}, t("lk_bank", { bank: bank.bank })), grid, extra);
    }));
  }

  let busy = false;
  let again = false;
  async function refresh() {
    if (document.querySelector("dialog[open]")) return; // never pull the grid from under an open form
    // A change heard while a read is on its way may not be in that read: read once more after it.
    if (busy) { again = true; return; }
    busy = true;
    try {
      render(await Edge.api("GET", "/api/devices/lockers"));
      document.body.dataset.lockersReady = "1";
    } catch (e) {
      Edge.flash(e.message, true);
    } finally {
      busy = false;
    }
    if (again) { again = false; await refresh(); }
  }

  await refresh();
  // Edge.page renders again on a language switch: one timer and one live stream per page.
  clearInterval(window.lockersTimer);
  if (window.lockersLive) window.lockersLive.close();
  window.lockersTimer = setInterval(() => { if (!document.hidden) refresh(); }, 2000);
  window.lockersLive = Edge.live((type) => { if (type === "compartment" || type === "alarm") refresh(); });
});
