/* The pickup shelves page. Staff and up: every shelf as a grid of its slots (empty; ready with the order, the
   customer's masked name and the hold deadline; released: a customer showed the right code and the slot's label
   is flashing, waiting for the handover, highlighted; to retrieve), live from the stream's `shelf` events and
   read again every 10 s anyway. Three scan panels for a keyboard-wedge scanner: Load (the order's barcode and the
   slot's label, in either order), Hand over and Retrieve (the order's barcode or the slot's label).
   Technicians also define a shelf by scanning its labels in slot order (each shown with its picture) and delete
   shelves. */
"use strict";

Edge.addStrings({
  en: {
    nav_shelves: "Pickup shelves", sh_title: "Pickup shelves", sh_none: "No pickup shelf is defined yet.",
    sh_slot: "Slot {n}", sh_state_empty: "empty", sh_state_ready: "ready", sh_state_released: "released: hand over",
    sh_state_retrieval: "to retrieve", sh_order: "Order", sh_customer: "Customer", sh_hold_until: "Held until",
    sh_released: "Code shown {ago}", sh_slots: "{n} slots",
    sh_load_title: "Load an order", sh_load_hint: "Scan the order's barcode and the slot's label, in either order.",
    sh_handover_title: "Hand over", sh_handover_hint: "After the customer's code: scan the order or the flashing slot's label.",
    sh_retrieve_title: "Retrieve", sh_retrieve_hint: "Scan the order or the slot's label of an order to take back.",
    sh_scan_placeholder: "Scan, then Enter", sh_waiting_slot: "Order {order}: now scan the slot's label.",
    sh_waiting_order: "Slot {slot}: now scan the order.", sh_loaded: "Order {order} is in {shelf}, slot {n}.",
    sh_handed_over: "Order {order} handed over.", sh_retrieved: "Order {order} taken back.", sh_done: "Done.",
    sh_reset: "Start over",
    sh_define_title: "Define a shelf", sh_define_hint: "Give the shelf an id and a name, then scan its slots' labels in order (slot 1 first).",
    sh_shelf_id: "Shelf id", sh_shelf_name: "Name", sh_label_scan: "Scan the next slot's label",
    sh_remove_last: "Remove last", sh_clear: "Clear", sh_save: "Save shelf", sh_no_labels: "No label scanned yet.",
    sh_not_a_tag: "{code} is not a label.", sh_twice: "Tag {tag} is already slot {n}.", sh_saved: "Shelf {shelf} saved with {n} slots.",
    sh_delete: "Delete", sh_delete_title: "Delete shelf {shelf}?", sh_delete_text: "Its slots are freed; its labels show nothing new until paired again.",
    sh_deleted: "Shelf {shelf} deleted.", sh_ok: "Confirm", sh_back: "Back", sh_list_title: "Shelves", sh_tag: "Label",
    sh_need_id: "Give the shelf an id and a name first.", sh_off: "This store runs no pickup shelves (they need [lockers] enabled).",
  },
  "zh-CN": {
    nav_shelves: "取货架", sh_title: "取货架", sh_none: "尚未定义取货架。",
    sh_slot: "{n} 号格", sh_state_empty: "空", sh_state_ready: "待取", sh_state_released: "已验码：请交付",
    sh_state_retrieval: "待取回", sh_order: "订单", sh_customer: "顾客", sh_hold_until: "保留至",
    sh_released: "{ago}验码", sh_slots: "{n} 个格位",
    sh_load_title: "上架订单", sh_load_hint: "扫描订单条码和格位价签，顺序不限。",
    sh_handover_title: "交付", sh_handover_hint: "顾客验码后：扫描订单或正在闪烁的格位价签。",
    sh_retrieve_title: "取回", sh_retrieve_hint: "扫描需取回订单的订单条码或格位价签。",
    sh_scan_placeholder: "扫描后按回车", sh_waiting_slot: "订单 {order}：请再扫描格位价签。",
    sh_waiting_order: "{slot}：请再扫描订单。", sh_loaded: "订单 {order} 已放入 {shelf} {n} 号格。",
    sh_handed_over: "订单 {order} 已交付。", sh_retrieved: "订单 {order} 已取回。", sh_done: "完成。",
    sh_reset: "重新开始",
    sh_define_title: "定义取货架", sh_define_hint: "填写货架编号和名称，然后按顺序扫描各格位的价签（从 1 号格开始）。",
    sh_shelf_id: "货架编号", sh_shelf_name: "名称", sh_label_scan: "扫描下一个格位的价签",
    sh_remove_last: "删除最后一个", sh_clear: "清空", sh_save: "保存货架", sh_no_labels: "尚未扫描价签。",
    sh_not_a_tag: "{code} 不是价签。", sh_twice: "价签 {tag} 已是 {n} 号格。", sh_saved: "货架 {shelf} 已保存，共 {n} 个格位。",
    sh_delete: "删除", sh_delete_title: "删除货架 {shelf}？", sh_delete_text: "其格位将被释放；价签在重新绑定前不会显示新内容。",
    sh_deleted: "货架 {shelf} 已删除。", sh_ok: "确认", sh_back: "返回", sh_list_title: "货架", sh_tag: "价签",
    sh_need_id: "请先填写货架编号和名称。", sh_off: "本店未启用取货架（需要启用 [lockers]）。",
  },
});

Edge.page(async (app) => {
  const { el, t } = Edge;
  const technician = Edge.can("technician");
  const shelvesBox = el("div", { id: "shelf-grid" });
  let shelves = [];

  /* A scan field: each code (typed fast by a wedge scanner, ended by Enter) goes to handle(code), one at a time. */
  const scanField = (id, handle) => {
    const input = el("input", {
      id, type: "text", autocomplete: "off", spellcheck: "false", class: "scan-input", maxlength: "512",
      placeholder: t("sh_scan_placeholder"), "aria-label": t("sh_scan_placeholder"),
    });
    const form = el("form", { class: "scan-form", id: id + "-form" }, input);
    let queue = Promise.resolve();
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const code = input.value.trim();
      input.value = "";
      if (code) queue = queue.then(() => handle(code)).catch((e) => Edge.flash(e.message, true));
    });
    return { input, form };
  };
  const status = (id, text) => el("p", { id, class: "muted", role: "status" }, text);
  const say = (box, text, ok) => { box.className = ok === undefined ? "muted" : ok ? "ok-text" : "error-text"; box.textContent = text; };

  /* Which slot a scanned code names, from the view: its label's tag id (any case, separators ignored), its scan
     code, or the scan link (.../s/<code>) its QR holds. null: not a slot label (so: an order). */
  const slotOf = (code) => {
    const raw = code.trim();
    const link = raw.match(/\/s\/([^/?#]+)\/?(?:[?#].*)?$/);
    const hex = raw.toLowerCase().replace(/[^0-9a-f]/g, "");
    for (const shelf of shelves) {
      for (const slot of shelf.slots) {
        if (slot.slot_id === raw || (raw.replace(/[:\-\s]/g, "").length === 16 && hex === slot.tag_id)) return slot;
        if (slot.scan_code && (raw === slot.scan_code || (link && link[1] === slot.scan_code))) return slot;
      }
    }
    return null;
  };
  const shelfName = (slot) => {
    const shelf = shelves.find((s) => s.slots.includes(slot));
    return shelf ? shelf.name : slot.shelf_id;
  };

  // Load: two scans, either order (the agent tells the slot's label from the order). The view only guides the
  // hint: a code it knows as a slot label asks for the order next, anything else for the slot.
  const loadStatus = status("shelf-load-status", t("sh_load_hint"));
  let first = null;
  const loadReset = () => { first = null; say(loadStatus, t("sh_load_hint")); };
  const slotById = (id) => shelves.flatMap((s) => s.slots).find((x) => x.slot_id === id) || null;
  const load = scanField("shelf-load-scan", async (code) => {
    if (first === null) {
      first = code;
      const slot = slotOf(code);
      return say(loadStatus, slot ? t("sh_waiting_order", { slot: `${shelfName(slot)} · ${t("sh_slot", { n: slot.position })}` })
        : t("sh_waiting_slot", { order: code }));
    }
    const body = { order: first, slot: code };
    first = null;
    try {
      const answer = await Edge.api("POST", "/api/shelves/load", body);
      const slot = slotById(answer.slot_id);
      say(loadStatus, t("sh_loaded", { order: answer.order_id, shelf: slot ? shelfName(slot) : answer.slot_id, n: answer.position }), true);
    } catch (e) {
      say(loadStatus, e.message, false);
    }
    await refresh();
  });

  const scanAction = (path, done) => {
    const box = status(path.replace(/\W/g, "-").slice(1) + "-status", "");
    const field = scanField("shelf-" + path.split("/").pop() + "-scan", async (code) => {
      try {
        const answer = await Edge.api("POST", path, { code });
        say(box, t(done, { order: answer.order_id || code }), true);
      } catch (e) {
        say(box, e.message, false);
      }
      await refresh();
    });
    return { box, field };
  };
  const handover = scanAction("/api/shelves/handover", "sh_handed_over");
  const retrieve = scanAction("/api/shelves/retrieve", "sh_retrieved");

  app.append(el("h1", {}, t("sh_title")),
    el("div", { class: "grid shelf-panels" },
      el("section", { class: "card", id: "shelf-load" }, el("h2", {}, t("sh_load_title")), load.form, loadStatus,
        el("button", { class: "action secondary", type: "button", onclick: loadReset }, t("sh_reset"))),
      el("section", { class: "card", id: "shelf-handover" }, el("h2", {}, t("sh_handover_title")),
        el("p", { class: "muted" }, t("sh_handover_hint")), handover.field.form, handover.box),
      el("section", { class: "card", id: "shelf-retrieve" }, el("h2", {}, t("sh_retrieve_title")),
        el("p", { class: "muted" }, t("sh_retrieve_hint")), retrieve.field.form, retrieve.box)),
    shelvesBox);

  function slotCell(slot) {
    const pickup = slot.order_id ? slot : null;
    return el("div", { class: `card shelf-slot shelf-${slot.state}`, dataset: { slot: slot.slot_id, state: slot.state, tag: slot.tag_id } },
      el("div", { class: "shelf-slot-head" }, el("strong", {}, t("sh_slot", { n: slot.position })),
        Edge.badge(t("sh_state_" + slot.state), { empty: "", ready: "ok", released: "warn", retrieval: "bad" }[slot.state] || "")),
      pickup ? el("div", { class: "mono shelf-order" }, slot.order_id) : null,
      pickup && slot.customer ? el("div", { class: "shelf-customer" }, slot.customer) : null,
      pickup && slot.hold_until_ms ? el("div", { class: "muted" }, t("sh_hold_until") + ": " + Edge.time(slot.hold_until_ms)) : null,
      slot.state === "released" && slot.released_ms ? el("div", { class: "muted" }, t("sh_released", { ago: Edge.ago(slot.released_ms) })) : null,
      el("div", { class: "muted mono shelf-tag" }, slot.tag_id));
  }

  function render() {
    if (!shelves.length) {
      shelvesBox.replaceChildren(el("p", { class: "card muted", id: "shelf-none" }, t("sh_none")));
      return;
    }
    shelvesBox.replaceChildren(...shelves.map((shelf) => el("section", { class: "shelf", dataset: { shelf: shelf.shelf_id } },
      el("h2", {}, shelf.name, " ", shelf.name === shelf.shelf_id ? null : el("span", { class: "muted mono" }, shelf.shelf_id), " ",
        el("span", { class: "muted" }, t("sh_slots", { n: shelf.slots.length }))),
      el("div", { class: "shelf-slots" }, shelf.slots.map(slotCell)))));
    if (technician) renderList();
  }

  let busy = false;
  let again = false;
  async function refresh() {
    if (busy || document.querySelector("dialog[open]")) { again = true; return; }
    busy = true;
    try {
      const data = await Edge.api("GET", "/api/shelves");
      shelves = (data.shelves || []).map((s) => ({ ...s, slots: [...s.slots].sort((a, b) => a.position - b.position) }));
      render();
      app.dataset.loaded = String(Date.now());
    } catch (e) {
      if (e.status === 503) { // no pickup shelves in this store: say so once, instead of an error every 10 s
        clearInterval(window.shelvesTimer);
        app.replaceChildren(el("h1", {}, t("sh_title")), el("p", { class: "card muted", id: "shelf-off" }, t("sh_off")));
        app.dataset.loaded = String(Date.now());
      } else {
        Edge.flash(e.message, true);
      }
    } finally {
      busy = false;
    }
    if (again) { again = false; await refresh(); }
  }

  /* A modal yes/no (native <dialog>). */
  const ask = (title, text) => new Promise((resolve) => {
    const dialog = el("dialog", { class: "card", id: "shelf-dialog" },
      el("form", { method: "dialog", class: "stack" }, el("h2", {}, title), el("p", {}, text),
        el("div", { class: "actions" }, el("button", { class: "action danger", type: "submit", value: "ok", id: "shelf-dialog-ok" }, t("sh_ok")),
          el("button", { class: "action secondary", type: "button", onclick: () => dialog.close("back") }, t("sh_back")))));
    dialog.addEventListener("close", () => { dialog.remove(); resolve(dialog.returnValue === "ok"); if (again) { again = false; refresh(); } });
    document.body.append(dialog);
    dialog.showModal();
  });

  // Technicians: define shelves by scanning labels in slot order, and delete them.
  const listBox = el("section", { class: "card", id: "shelf-list" });
  function renderList() {
    listBox.replaceChildren(el("h2", {}, t("sh_list_title")), shelves.length
      ? el("div", { class: "table-wrap" }, el("table", {}, el("tbody", {}, shelves.map((shelf) => el("tr", { dataset: { shelf: shelf.shelf_id } },
        el("td", { class: "mono" }, shelf.shelf_id), el("td", {}, shelf.name), el("td", {}, t("sh_slots", { n: shelf.slots.length })),
        el("td", {}, el("button", { class: "action danger shelf-delete", onclick: () => remove(shelf) }, t("sh_delete"))))))))
      : el("p", { class: "muted" }, t("sh_none")));
  }
  async function remove(shelf) {
    if (!(await ask(t("sh_delete_title", { shelf: shelf.shelf_id }), t("sh_delete_text")))) return;
    try {
      await Edge.api("DELETE", `/api/shelves/${encodeURIComponent(shelf.shelf_id)}`);
      Edge.flash(t("sh_deleted", { shelf: shelf.shelf_id }));
    } catch (e) {
      Edge.flash(e.message, true);
    }
    await refresh();
  }

  if (technician) {
    const labels = []; // [{tag_id, type}] in slot order
    const idInput = el("input", { id: "shelf-new-id", maxlength: 32, autocomplete: "off", required: true });
    const nameInput = el("input", { id: "shelf-new-name", maxlength: 64, autocomplete: "off", required: true });
    const labelsBox = el("ol", { id: "shelf-new-labels", class: "shelf-labels" });
    const defineStatus = status("shelf-define-status", t("sh_define_hint"));
    const showLabels = () => {
      labelsBox.replaceChildren(...labels.map((label, i) => el("li", { dataset: { tag: label.tag_id } },
        el("strong", {}, t("sh_slot", { n: i + 1 })), " ", el("span", { class: "mono" }, label.tag_id), " ",
        el("img", { class: "preview shelf-label-preview", alt: label.tag_id, src: `/api/devices/tags/${encodeURIComponent(label.tag_id)}/preview.png` }))));
      if (!labels.length) labelsBox.append(el("li", { class: "muted shelf-no-labels" }, t("sh_no_labels")));
      for (const img of labelsBox.querySelectorAll("img")) img.addEventListener("error", () => img.remove());
    };
    const labelScan = scanField("shelf-label-scan", async (code) => {
      const found = await Edge.api("GET", "/api/pairing/lookup?code=" + encodeURIComponent(code));
      if (!found.tag) return say(defineStatus, t("sh_not_a_tag", { code }), false);
      const at = labels.findIndex((l) => l.tag_id === found.tag.tag_id);
      if (at >= 0) return say(defineStatus, t("sh_twice", { tag: found.tag.tag_id, n: at + 1 }), false);
      labels.push({ tag_id: found.tag.tag_id });
      say(defineStatus, `${t("sh_slot", { n: labels.length })}: ${found.tag.tag_id}`, true);
      showLabels();
    });
    const save = async () => {
      const shelfId = idInput.value.trim();
      const name = nameInput.value.trim();
      if (!shelfId || !name) return say(defineStatus, t("sh_need_id"), false);
      try {
        await Edge.api("POST", "/api/shelves", { shelf_id: shelfId, name, tags: labels.map((l) => l.tag_id) });
        say(defineStatus, t("sh_saved", { shelf: shelfId, n: labels.length }), true);
        labels.length = 0;
        idInput.value = nameInput.value = "";
        showLabels();
      } catch (e) {
        say(defineStatus, e.message, false);
      }
      await refresh();
    };
    showLabels();
    app.append(el("div", { class: "grid shelf-admin" },
      el("section", { class: "card", id: "shelf-define" }, el("h2", {}, t("sh_define_title")), defineStatus,
        el("div", { class: "stack" }, el("label", {}, t("sh_shelf_id"), idInput), el("label", {}, t("sh_shelf_name"), nameInput),
          el("div", {}, el("span", {}, t("sh_label_scan")), labelScan.form)),
        labelsBox,
        el("div", { class: "actions" },
          el("button", { class: "action", type: "button", id: "shelf-save", onclick: save }, t("sh_save")),
          el("button", { class: "action secondary", type: "button", id: "shelf-remove-last", onclick: () => { labels.pop(); showLabels(); } }, t("sh_remove_last")),
          el("button", { class: "action secondary", type: "button", id: "shelf-clear", onclick: () => { labels.length = 0; showLabels(); } }, t("sh_clear")))),
      listBox));
  }

  await refresh();
  load.input.focus();
  // Edge.page renders again on a language switch: one timer and one live stream per page.
  clearInterval(window.shelvesTimer);
  if (window.shelvesLive) window.shelvesLive.close();
  if (document.getElementById("shelf-off")) return;
  window.shelvesTimer = setInterval(() => { if (!document.hidden) refresh(); }, 10000);
  window.shelvesLive = Edge.live((type) => { if (type === "shelf") refresh(); });
});
