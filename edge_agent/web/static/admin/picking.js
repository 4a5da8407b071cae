/* The picking board (staff and up): every active pick list with its picker's colour, its open lines (product,
   quantity, order, the tags lit for it, time since the list started, ticking) and the lines done (picked, short
   or substituted, by whom, when); below, the lists finished today. Staff confirm a line here (picked, short with
   the quantity taken, or a substitute by sku or barcode), cancel a list, or scan a product into the scan field
   (a keyboard-wedge scanner types it and presses Enter): the agent confirms the matching open line as it does a
   handheld scan. The board follows the live stream's `picking` events, and reads again every 10 s anyway. */
"use strict";

Edge.addStrings({
  en: {
    nav_picking: "Picking", pk_title: "Picking board", pk_off: "Pick-to-light picking is off in this store.",
    pk_none: "No pick list is active.", pk_recent: "Finished today", pk_no_recent: "No pick list finished today.",
    pk_scan_title: "Scan a picked product", pk_scan_placeholder: "Scan a product's barcode or sku, then Enter",
    pk_scan_hint: "Scanning a product confirms the open line waiting for it, as a handheld scanner does.",
    pk_scanned: "{name}: line {line} of {list} confirmed.", pk_no_line: "No open line is waiting for {code}.",
    pk_picker: "Picker", pk_orders: "Orders", pk_elapsed: "Elapsed", pk_started: "Started", pk_finished: "Finished",
    pk_product: "Product", pk_qty: "Qty", pk_order: "Order", pk_tags: "Lit tags", pk_state: "State", pk_by: "By",
    pk_when: "When", pk_open_lines: "Open lines", pk_done_lines: "Done", pk_all_done: "Every line is done.",
    pk_picked: "Picked", pk_short: "Short", pk_substitute: "Substitute", pk_cancel_list: "Cancel list",
    pk_state_open: "open", pk_state_picked: "picked", pk_state_short: "short", pk_state_substituted: "substituted",
    pk_state_cancelled: "cancelled", pk_list_active: "active", pk_list_completed: "completed", pk_list_cancelled: "cancelled",
    pk_short_title: "Short pick: {name}", pk_short_label: "How many were taken (0 to {max})",
    pk_sub_title: "Substitute for {name}", pk_sub_code: "Substitute's sku or barcode", pk_sub_qty: "Quantity taken",
    pk_cancel_title: "Cancel pick list {list}?", pk_cancel_text: "Its lit tags go dark and show their prices again.",
    pk_ok: "Confirm", pk_back: "Back", pk_done_msg: "Line {line} of {list}: {state}.", pk_cancelled: "Pick list {list} cancelled.",
    pk_took: "{n} taken", pk_instead: "instead: {name}", pk_no_tags: "no tag", pk_lines_done: "lines done: {done}/{total}",
    pk_colour_red: "red", pk_colour_green: "green", pk_colour_blue: "blue", pk_colour_white: "white",
  },
  "zh-CN": {
    nav_picking: "拣货", pk_title: "拣货看板", pk_off: "本店未启用亮灯拣货。",
    pk_none: "当前没有进行中的拣货单。", pk_recent: "今日已结束", pk_no_recent: "今天还没有结束的拣货单。",
    pk_scan_title: "扫描已拣商品", pk_scan_placeholder: "扫描商品条码或输入 SKU，然后按回车",
    pk_scan_hint: "扫描商品即确认等待该商品的拣货行，与手持扫码枪相同。",
    pk_scanned: "{name}：拣货单 {list} 第 {line} 行已确认。", pk_no_line: "没有等待 {code} 的拣货行。",
    pk_picker: "拣货员", pk_orders: "订单", pk_elapsed: "用时", pk_started: "开始时间", pk_finished: "结束时间",
    pk_product: "商品", pk_qty: "数量", pk_order: "订单", pk_tags: "亮灯价签", pk_state: "状态", pk_by: "确认人",
    pk_when: "时间", pk_open_lines: "待拣", pk_done_lines: "已完成", pk_all_done: "所有行均已完成。",
    pk_picked: "已拣", pk_short: "缺货", pk_substitute: "替换", pk_cancel_list: "取消拣货单",
    pk_state_open: "待拣", pk_state_picked: "已拣", pk_state_short: "缺货", pk_state_substituted: "已替换",
    pk_state_cancelled: "已取消", pk_list_active: "进行中", pk_list_completed: "已完成", pk_list_cancelled: "已取消",
    pk_short_title: "缺货：{name}", pk_short_label: "实际拣取数量（0 至 {max}）",
    pk_sub_title: "替换 {name}", pk_sub_code: "替换商品的 SKU 或条码", pk_sub_qty: "拣取数量",
    pk_cancel_title: "取消拣货单 {list}？", pk_cancel_text: "其亮灯价签将熄灭并恢复显示价格。",
    pk_ok: "确认", pk_back: "返回", pk_done_msg: "拣货单 {list} 第 {line} 行：{state}。", pk_cancelled: "拣货单 {list} 已取消。",
    pk_took: "拣取 {n} 件", pk_instead: "替换为：{name}", pk_no_tags: "无价签", pk_lines_done: "已完成 {done}/{total} 行",
    pk_colour_red: "红", pk_colour_green: "绿", pk_colour_blue: "蓝", pk_colour_white: "白",
  },
});

Edge.page(async (app) => {
  const { el, t } = Edge;
  const listsBox = el("div", { id: "pick-lists" });
  const recentBox = el("section", { class: "card", id: "pick-recent" });
  const input = el("input", {
    id: "pick-scan", type: "text", autocomplete: "off", spellcheck: "false", class: "scan-input", maxlength: "512",
    placeholder: t("pk_scan_placeholder"), "aria-label": t("pk_scan_placeholder"),
  });
  const scanResult = el("p", { id: "pick-scan-result", class: "muted", role: "status" }, t("pk_scan_hint"));
  const scanForm = el("form", { class: "scan-form", id: "pick-scan-form" }, input);
  const scanBox = el("section", { class: "card", id: "pick-scan-card" }, el("h2", {}, t("pk_scan_title")), scanForm, scanResult);
  app.append(el("h1", {}, t("pk_title")), scanBox, listsBox, recentBox);

  // Elapsed times count on the agent's clock: the answer's now_ms against the browser's, once per read.
  let clockOffset = 0;
  const agentNow = () => Date.now() + clockOffset;
  const elapsed = (fromMs, toMs) => {
    const s = Math.max(0, Math.floor(((toMs === undefined ? agentNow() : toMs) - fromMs) / 1000));
    const h = Math.floor(s / 3600);
    const mm = String(Math.floor((s % 3600) / 60)).padStart(h ? 2 : 1, "0");
    const ss = String(s % 60).padStart(2, "0");
    return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
  };
  const productText = (line) => (line.name ? `${line.name} (${line.sku})` : line.sku);
  const byText = (by) => {
    if (!by) return "";
    const [kind, ...rest] = by.split(":");
    return rest.length ? `${rest.join(":")} (${kind})` : by;
  };
  const swatch = (colour) => el("span", { class: `pick-swatch pick-${colour}`, title: t("pk_colour_" + colour) });
  const stateBadge = (state) => Edge.badge(t("pk_state_" + state), { picked: "ok", short: "warn", substituted: "warn", cancelled: "bad" }[state] || "");

  /* A modal form (native <dialog>): fields is a list of [label, input]; resolves true on confirm, false otherwise. */
  const ask = (id, title, text, fields) => new Promise((resolve) => {
    const dialog = el("dialog", { class: "card", id },
      el("form", { method: "dialog", class: "stack" }, el("h2", {}, title), text ? el("p", {}, text) : null,
        fields.map(([label, field]) => el("label", {}, label, field)),
        el("div", { class: "actions" }, el("button", { class: "action", type: "submit", value: "ok", id: id + "-ok" }, t("pk_ok")),
          el("button", { class: "action secondary", type: "button", onclick: () => dialog.close("back") }, t("pk_back")))));
    dialog.addEventListener("close", () => { dialog.remove(); resolve(dialog.returnValue === "ok"); input.focus(); });
    document.body.append(dialog);
    dialog.showModal();
  });

  const confirmLine = async (list, line, body) => {
    try {
      const done = await Edge.api("POST", `/api/picking/${encodeURIComponent(list.list_id)}/lines/${line.line_no}/confirm`, body);
      Edge.flash(t("pk_done_msg", { list: list.list_id, line: line.line_no, state: t("pk_state_" + done.state) }));
    } catch (e) {
      Edge.flash(e.message, true);
    }
    await refresh();
  };
  const picked = (list, line) => confirmLine(list, line, {});
  const short = async (list, line) => {
    const qty = el("input", { type: "number", id: "pk-short-qty", min: 0, max: line.quantity - 1, step: 1, value: 0, required: true });
    if (await ask("pk-short", t("pk_short_title", { name: productText(line) }), null, [[t("pk_short_label", { max: line.quantity - 1 }), qty]])) {
      await confirmLine(list, line, { picked_qty: Number(qty.value) });
    }
  };
  const substitute = async (list, line) => {
    const code = el("input", { type: "text", id: "pk-sub-code", required: true, maxlength: 128, autocomplete: "off" });
    const qty = el("input", { type: "number", id: "pk-sub-qty", min: 1, step: 1, value: line.quantity, required: true });
    if (await ask("pk-sub", t("pk_sub_title", { name: productText(line) }), null, [[t("pk_sub_code"), code], [t("pk_sub_qty"), qty]])) {
      await confirmLine(list, line, { substitute_sku: code.value.trim(), picked_qty: Number(qty.value) });
    }
  };
  const cancel = async (list) => {
    if (!(await ask("pk-cancel", t("pk_cancel_title", { list: list.list_id }), t("pk_cancel_text"), []))) return;
    try {
      await Edge.api("POST", `/api/picking/${encodeURIComponent(list.list_id)}/cancel`, {});
      Edge.flash(t("pk_cancelled", { list: list.list_id }));
    } catch (e) {
      Edge.flash(e.message, true);
    }
    await refresh();
  };

  const openRow = (list, line) => el("tr", { dataset: { line: line.line_no, state: line.state } },
    el("td", {}, el("strong", {}, line.name || line.sku), el("div", { class: "muted mono" }, line.sku)),
    el("td", { class: "pick-qty" }, String(line.quantity)),
    el("td", { class: "mono" }, line.order_id),
    el("td", { class: "mono pick-tags" }, line.tags.length ? line.tags.join(" ") : el("span", { class: "muted" }, t("pk_no_tags"))),
    el("td", { class: "actions" },
      el("button", { class: "action pk-picked", onclick: () => picked(list, line) }, t("pk_picked")),
      line.quantity > 0 ? el("button", { class: "action secondary pk-short", onclick: () => short(list, line) }, t("pk_short")) : null,
      el("button", { class: "action secondary pk-substitute", onclick: () => substitute(list, line) }, t("pk_substitute"))));

  const doneRow = (line) => el("tr", { dataset: { line: line.line_no, state: line.state } },
    el("td", {}, productText(line)),
    el("td", {}, stateBadge(line.state),
      line.state === "short" || (line.state === "substituted" && line.picked_qty !== null)
        ? el("span", { class: "muted" }, " ", t("pk_took", { n: line.picked_qty })) : null,
      line.substitute_sku ? el("div", { class: "muted" }, t("pk_instead", { name: line.substitute_name ? `${line.substitute_name} (${line.substitute_sku})` : line.substitute_sku })) : null),
    el("td", { class: "mono" }, line.order_id),
    el("td", {}, byText(line.confirmed_by)),
    el("td", {}, line.confirmed_ms ? Edge.time(line.confirmed_ms) : ""));

  const table = (heads, rows, id) => el("div", { class: "table-wrap" }, el("table", { class: id },
    el("thead", {}, el("tr", {}, heads.map((h) => el("th", {}, t(h))))), el("tbody", {}, rows)));

  function listCard(list) {
    const open = list.lines.filter((l) => l.state === "open");
    const done = list.lines.filter((l) => l.state !== "open");
    const active = list.state === "active";
    return el("section", { class: `card pick-list pick-border-${list.colour}`, dataset: { list: list.list_id, state: list.state } },
      el("div", { class: "pick-head" },
        swatch(list.colour),
        el("strong", { class: "pick-picker" }, list.picker),
        el("span", { class: "mono muted" }, list.list_id),
        active ? el("span", { class: "pick-elapsed", title: t("pk_elapsed"), dataset: { since: list.created_ms } }, elapsed(list.created_ms))
          : el("span", {}, Edge.badge(t("pk_list_" + list.state), list.state === "completed" ? "ok" : "bad"), " ",
            el("span", { class: "muted" }, elapsed(list.created_ms, list.finished_ms || list.created_ms))),
        el("span", { class: "muted" }, t("pk_lines_done", { done: done.length, total: list.lines.length })),
        active ? el("button", { class: "action danger pk-cancel", onclick: () => cancel(list) }, t("pk_cancel_list")) : null),
      el("p", { class: "muted" }, t("pk_orders") + ": ", list.order_ids.join(", "),
        " · ", t("pk_started") + ": " + Edge.time(list.created_ms),
        list.finished_ms ? " · " + t("pk_finished") + ": " + Edge.time(list.finished_ms) : ""),
      active ? (open.length ? table(["pk_product", "pk_qty", "pk_order", "pk_tags", ""], open.map((l) => openRow(list, l)), "pick-open")
        : el("p", { class: "muted" }, t("pk_all_done"))) : null,
      done.length ? el("details", { open: active ? true : null }, el("summary", {}, t("pk_done_lines") + ` (${done.length})`),
        table(["pk_product", "pk_state", "pk_order", "pk_by", "pk_when"], done.map(doneRow), "pick-done")) : null);
  }

  function render(data) {
    clockOffset = data.now_ms - Date.now();
    if (!data.enabled) {
      scanBox.hidden = true;
      recentBox.hidden = true;
      listsBox.replaceChildren(el("p", { class: "card muted", id: "pick-off" }, t("pk_off")));
      return;
    }
    listsBox.replaceChildren(...(data.lists.length ? data.lists.map(listCard) : [el("p", { class: "card muted", id: "pick-none" }, t("pk_none"))]));
    const recent = data.recent || [];
    recentBox.replaceChildren(el("h2", {}, t("pk_recent")),
      recent.length ? el("div", { class: "pick-recent-lists" }, recent.map(listCard)) : el("p", { class: "muted" }, t("pk_no_recent")));
  }

  // Reads never overlap; a read asked for during one runs right after it, so a live event is never lost.
  let busy = false;
  let again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    if (document.querySelector("dialog[open]")) { again = true; return; } // never pull a line from under an open form
    busy = true;
    try {
      render(await Edge.api("GET", "/api/picking?recent=1"));
      app.dataset.loaded = String(Date.now());
    } catch (e) {
      Edge.flash(e.message, true);
    } finally {
      busy = false;
    }
    if (again) { again = false; await refresh(); }
  }
  document.addEventListener("close", () => { if (again) { again = false; refresh(); } }, true);

  // Scanned codes are sent one at a time, in the order typed (a scanner can send the next before an answer).
  let queue = Promise.resolve();
  scanForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const code = input.value.trim();
    input.value = "";
    if (!code) return;
    queue = queue.then(async () => {
      try {
        const line = await Edge.api("POST", "/api/picking/scan", { code });
        scanResult.className = "ok-text";
        scanResult.textContent = t("pk_scanned", { name: productText(line), line: line.line_no, list: line.list_id });
      } catch (e) {
        scanResult.className = "error-text";
        scanResult.textContent = e.body && e.body.detail && e.body.detail.error === "no_open_line" ? t("pk_no_line", { code }) : e.message;
      }
      await refresh();
    });
  });

  await refresh();
  input.focus();
  // Edge.page renders again on a language switch: one timer, one ticker and one live stream per page.
  clearInterval(window.pickingTimer);
  clearInterval(window.pickingTicker);
  if (window.pickingLive) window.pickingLive.close();
  window.pickingTimer = setInterval(() => { if (!document.hidden) refresh(); }, 10000);
  window.pickingTicker = setInterval(() => {
    for (const node of document.querySelectorAll(".pick-elapsed[data-since]")) node.textContent = elapsed(Number(node.dataset.since));
  }, 1000);
  window.pickingLive = Edge.live((type) => { if (type === "picking") refresh(); });
});
