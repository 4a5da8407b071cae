/* The pairing page: pair a shelf tag with a product by scanning two codes with a keyboard-wedge scanner (it
   types the code fast and presses Enter), or by searching; the preview shows at once what the tag will show.
   Also the CSV export and import of pairings and of the catalog, with the per-row report. */
"use strict";

Edge.addStrings({
  en: {
    pair_title: "Pairing", pair_scan_title: "Scan to pair",
    pair_step_tag: "1 · Scan the tag", pair_step_product: "2 · Scan the product",
    pair_scan_hint: "Scan the tag's code (or type its id, then Enter), then the product's barcode or sku.",
    pair_scan_placeholder: "Scan or type a code, then Enter",
    pair_tag: "Tag", pair_product: "Product", pair_none_yet: "not chosen yet", pair_clear: "Start over",
    pair_unknown_code: "Unknown code: {code}", pair_scan_tag_first: "That is a product; now scan the tag.",
    pair_done: "Tag {tag} now shows {name}. The picture is on its way to the tag.",
    pair_unchanged: "Tag {tag} already showed {name}.",
    pair_preview: "Preview", pair_preview_note: "What the tag will show with this product.",
    pair_last: "Last pairing", pair_current_product: "now shows", pair_unpaired: "unpaired",
    pair_discovered: "discovered (pairing adopts it)",
    pair_search_title: "Search", pair_search_products: "Find a product (name, sku, barcode)",
    pair_search_tags: "Find a tag (id, scan code, sku)", pair_choose: "Choose", pair_no_match: "No match.",
    pair_csv_title: "CSV import and export", pair_export_pairings: "Download pairings",
    pair_export_catalog: "Download catalog", pair_import_kind: "File holds", pair_kind_pairings: "pairings (tag_id,sku)",
    pair_kind_catalog: "products (catalog)", pair_import: "Import", pair_choose_file: "Choose a CSV file first.",
    pair_report: "Import report", pair_report_rows: "rows read", pair_report_imported: "imported",
    pair_report_changed: "changed", pair_report_unchanged: "unchanged", pair_report_errors: "rows with errors",
    pair_report_omitted: "more errors not listed", pair_row: "Row", pair_column: "Column", pair_message: "Problem",
    pair_report_ok: "Every row was imported.", pair_file: "file",
    col_tag: "Tag", col_type: "Type", col_name: "Name", col_sku: "SKU", col_barcode: "Barcode", col_price: "Price",
    col_shows: "Shows",
  },
  "zh-CN": {
    pair_title: "绑定", pair_scan_title: "扫码绑定",
    pair_step_tag: "1 · 扫描价签", pair_step_product: "2 · 扫描商品",
    pair_scan_hint: "先扫描价签上的码（或输入价签编号后按回车），再扫描商品条码或输入 SKU。",
    pair_scan_placeholder: "扫描或输入编码，然后按回车",
    pair_tag: "价签", pair_product: "商品", pair_none_yet: "尚未选择", pair_clear: "重新开始",
    pair_unknown_code: "未知编码：{code}", pair_scan_tag_first: "这是商品码；请再扫描价签。",
    pair_done: "价签 {tag} 已绑定 {name}，新画面正在发送到价签。",
    pair_unchanged: "价签 {tag} 已经显示 {name}。",
    pair_preview: "预览", pair_preview_note: "价签绑定此商品后显示的画面。",
    pair_last: "最近一次绑定", pair_current_product: "当前显示", pair_unpaired: "未绑定",
    pair_discovered: "已发现（绑定即纳管）",
    pair_search_title: "搜索", pair_search_products: "查找商品（名称、SKU、条码）",
    pair_search_tags: "查找价签（编号、扫码码、SKU）", pair_choose: "选择", pair_no_match: "没有匹配项。",
    pair_csv_title: "CSV 导入与导出", pair_export_pairings: "下载绑定关系",
    pair_export_catalog: "下载商品目录", pair_import_kind: "文件内容", pair_kind_pairings: "绑定关系（tag_id,sku）",
    pair_kind_catalog: "商品（目录）", pair_import: "导入", pair_choose_file: "请先选择 CSV 文件。",
    pair_report: "导入报告", pair_report_rows: "读取行数", pair_report_imported: "已导入",
    pair_report_changed: "有变化", pair_report_unchanged: "无变化", pair_report_errors: "出错的行",
    pair_report_omitted: "条错误未列出", pair_row: "行", pair_column: "列", pair_message: "问题",
    pair_report_ok: "所有行均已导入。", pair_file: "文件",
    col_tag: "价签", col_type: "型号", col_name: "名称", col_sku: "SKU", col_barcode: "条码", col_price: "价格",
    col_shows: "显示",
  },
});

Edge.page(async (app) => {
  const el = Edge.el;
  const t = Edge.t;
  const state = { tag: null, product: null };

  const input = el("input", {
    id: "scan-input", type: "text", autocomplete: "off", spellcheck: "false", class: "scan-input",
    placeholder: t("pair_scan_placeholder"), "aria-label": t("pair_scan_placeholder"), maxlength: "512",
  });
  const stepTag = el("li", { id: "step-tag", class: "step" }, t("pair_step_tag"));
  const stepProduct = el("li", { id: "step-product", class: "step" }, t("pair_step_product"));
  const tagBox = el("dd", { id: "chosen-tag" });
  const productBox = el("dd", { id: "chosen-product" });
  const previewBox = el("div", { id: "pair-preview", class: "pair-preview" });
  const resultBox = el("p", { id: "pair-result", class: "muted", role: "status" });

  const money = (p) => (p.price === null ? "" : p.price + " " + p.currency);
  const tagLine = (tag) => [
    el("span", { class: "mono" }, tag.tag_id), " ", Edge.badge(tag.type),
    " ", tag.adopted ? "" : Edge.badge(t("pair_discovered"), "discovered"),
    el("div", { class: "muted" }, t("pair_current_product") + ": ",
      tag.product ? tag.product.name + " (" + tag.product.sku + ")" : t("pair_unpaired")),
  ];
  const productLine = (p) => [
    el("strong", {}, p.name), " ", el("span", { class: "muted" }, p.sku + (p.barcode ? " · " + p.barcode : "")),
    el("div", {}, money(p)),
  ];

  function showState() {
    const wantTag = state.tag === null;
    stepTag.setAttribute("aria-current", wantTag ? "step" : "false");
    stepProduct.setAttribute("aria-current", wantTag ? "false" : "step");
    stepTag.classList.toggle("done", !wantTag);
    app.dataset.step = wantTag ? "tag" : "product";
    tagBox.replaceChildren(...(state.tag ? tagLine(state.tag) : [el("span", { class: "muted" }, t("pair_none_yet"))]));
    productBox.replaceChildren(...(state.product ? productLine(state.product) : [el("span", { class: "muted" }, t("pair_none_yet"))]));
  }

  function showPreview(tagId, sku) {
    const query = "tag_id=" + encodeURIComponent(tagId) + "&sku=" + encodeURIComponent(sku) + "&scale=2";
    const img = el("img", { class: "preview", id: "preview-image", alt: t("pair_preview"), src: "/api/pairing/preview?" + query });
    img.addEventListener("error", () => img.replaceWith(el("p", { class: "error-text" }, t("error"))));
    previewBox.replaceChildren(el("h3", {}, t("pair_preview")), img, el("p", { class: "muted" }, t("pair_preview_note")));
  }

  async function pair() {
    const tag = state.tag;
    const product = state.product;
    showPreview(tag.tag_id, product.sku); // at once: rendered by the agent before the tag has anything
    try {
      const answer = await Edge.api("POST", "/api/pairing", { tag_id: tag.tag_id, sku: product.sku });
      resultBox.className = "ok-text";
      resultBox.dataset.tag = tag.tag_id;
      resultBox.dataset.sku = product.sku;
      resultBox.textContent = t(answer.changed ? "pair_done" : "pair_unchanged", { tag: tag.tag_id, name: product.name });
    } catch (e) {
      resultBox.className = "error-text";
      resultBox.textContent = e.message;
    }
    state.tag = null;
    state.product = null;
    showState();
  }

  async function chooseTag(tag) {
    state.tag = tag;
    showState();
    if (state.product) await pair();
  }

  async function chooseProduct(product) {
    state.product = product;
    showState();
    if (state.tag) await pair();
    else Edge.flash(t("pair_scan_tag_first"));
  }

  async function scanned(code) {
    const found = await Edge.api("GET", "/api/pairing/lookup?code=" + encodeURIComponent(code));
    // The step decides when a code could be both (a sku that looks like a scan code).
    if (found.tag && (state.tag === null || !found.product)) return chooseTag(found.tag);
    if (found.product) return chooseProduct(found.product);
    Edge.flash(t("pair_unknown_code", { code }), true);
  }

  // Codes are handled one at a time, in the order typed: a wedge scanner can send the second code while the
  // first is still being looked up.
  let queue = Promise.resolve();
  const form = el("form", { class: "scan-form", id: "scan-form" }, input);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const code = input.value.trim();
    input.value = "";
    if (!code) return;
    queue = queue.then(() => scanned(code)).catch((e) => Edge.flash(e.message, true));
  });

  const clear = el("button", { type: "button", class: "secondary", onclick: () => {
    state.tag = null; state.product = null; showState(); input.focus();
  } }, t("pair_clear"));

  // -- search ------------------------------------------------------------------------------------------------
  function searchBox(labelKey, path, key, render, choose) {
    const box = el("input", { type: "search", autocomplete: "off", "aria-label": t(labelKey), placeholder: t(labelKey) });
    const results = el("div", { class: "table-wrap" });
    let timer = null;
    box.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const q = box.value.trim();
        if (!q) { results.replaceChildren(); return; }
        try {
          const data = await Edge.api("GET", path + "?limit=10&q=" + encodeURIComponent(q));
          const rows = data[key];
          results.replaceChildren(rows.length ? render(rows, (item) => { choose(item); input.focus(); })
            : el("p", { class: "muted" }, t("pair_no_match")));
        } catch (e) { Edge.flash(e.message, true); }
      }, 200);
    });
    return el("label", {}, t(labelKey), box, results);
  }

  const productTable = (rows, choose) => el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, t("col_name")), el("th", {}, t("col_sku")), el("th", {}, t("col_barcode")),
      el("th", { class: "num" }, t("col_price")), el("th", {}))),
    el("tbody", {}, rows.map((p) => el("tr", {}, el("td", {}, p.name), el("td", { class: "mono" }, p.sku),
      el("td", { class: "mono" }, p.barcode || ""), el("td", { class: "num" }, money(p)),
      el("td", {}, el("button", { type: "button", class: "secondary", onclick: () => choose(p) }, t("pair_choose")))))));

  const tagTable = (rows, choose) => el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, t("col_tag")), el("th", {}, t("col_type")), el("th", {}, t("col_shows")), el("th", {}))),
    el("tbody", {}, rows.map((tag) => el("tr", {}, el("td", { class: "mono" }, tag.tag_id), el("td", {}, tag.type),
      el("td", {}, tag.product ? tag.product.name : (tag.adopted ? t("pair_unpaired") : t("pair_discovered"))),
      el("td", {}, el("button", { type: "button", class: "secondary", onclick: () => chooseTag(tag) }, t("pair_choose")))))));

  // -- CSV -----------------------------------------------------------------------------------------------------
  const reportBox = el("div", { id: "import-report" });
  const fileInput = el("input", { type: "file", id: "csv-file", accept: ".csv,text/csv" });
  const kind = el("select", { id: "csv-kind", "aria-label": t("pair_import_kind") },
    el("option", { value: "pairing" }, t("pair_kind_pairings")), el("option", { value: "catalog" }, t("pair_kind_catalog")));

  function showReport(report) {
    const summary = el("dl", { class: "kv" },
      el("dt", {}, t("pair_report_rows")), el("dd", {}, report.rows),
      el("dt", {}, t("pair_report_imported")), el("dd", {}, report.imported),
      el("dt", {}, t("pair_report_changed")), el("dd", {}, report.changed.length),
      el("dt", {}, t("pair_report_unchanged")), el("dd", {}, report.unchanged),
      el("dt", {}, t("pair_report_errors")), el("dd", {}, report.errors.length));
    const errors = report.errors.length
      ? el("div", { class: "table-wrap" }, el("table", { id: "import-errors" },
        el("thead", {}, el("tr", {}, el("th", { class: "num" }, t("pair_row")), el("th", {}, t("pair_column")), el("th", {}, t("pair_message")))),
        el("tbody", {}, report.errors.map((e) => el("tr", {}, el("td", { class: "num" }, e.row === null ? t("pair_file") : e.row),
          el("td", { class: "mono" }, e.column || ""), el("td", {}, e.message))))))
      : el("p", { class: "ok-text" }, t("pair_report_ok"));
    const omitted = report.errors_omitted ? el("p", { class: "muted" }, report.errors_omitted + " " + t("pair_report_omitted")) : "";
    reportBox.replaceChildren(el("h3", {}, t("pair_report")), summary, errors, omitted);
  }

  async function upload() {
    const file = fileInput.files[0];
    if (!file) { Edge.flash(t("pair_choose_file"), true); return; }
    try {
      showReport(await Edge.api("POST", "/api/" + kind.value + "/import", file));
    } catch (e) {
      if (e.body && e.body.detail && e.body.detail.report) showReport(e.body.detail.report);
      Edge.flash(e.message, true);
    }
  }

  app.append(
    el("div", { class: "toolbar" }, el("h1", {}, t("pair_title"))),
    el("div", { class: "grid pair-grid" },
      el("section", { class: "card" },
        el("h2", {}, t("pair_scan_title")),
        el("ol", { class: "steps" }, stepTag, stepProduct),
        el("p", { class: "muted" }, t("pair_scan_hint")),
        form,
        el("dl", { class: "kv pair-chosen" }, el("dt", {}, t("pair_tag")), tagBox, el("dt", {}, t("pair_product")), productBox),
        el("div", { class: "actions" }, clear),
        resultBox),
      el("section", { class: "card" }, previewBox),
      el("section", { class: "card wide" },
        el("h2", {}, t("pair_search_title")),
        el("div", { class: "grid" },
          searchBox("pair_search_tags", "/api/pairing/tags", "tags", tagTable, chooseTag),
          searchBox("pair_search_products", "/api/pairing/products", "products", productTable, chooseProduct))),
      el("section", { class: "card wide" },
        el("h2", {}, t("pair_csv_title")),
        el("div", { class: "actions" },
          el("a", { class: "button secondary", href: "/api/pairing/export.csv", download: "pairings.csv" }, t("pair_export_pairings")),
          el("a", { class: "button secondary", href: "/api/catalog/export.csv", download: "catalog.csv" }, t("pair_export_catalog"))),
        el("div", { class: "actions csv-upload" }, kind, fileInput,
          el("button", { type: "button", class: "action", id: "csv-import", onclick: upload }, t("pair_import"))),
        reportBox)),
  );
  showState();
  input.focus();
});
