// The kiosk page (served by edge_agent/web/kiosk_screen.py): a touch screen in the store where shoppers
// browse the catalog, scan products, fill a cart and order (pay on the phone, reserve for the counter or a
// locker, or pay at the till). Contract: docs/kiosk-api.md.
//
// Everything goes through /kiosk/{id}/api/...: the page never prices anything itself (the order's total
// comes from the agent; the cart's running total is only a display), and holds the cart in memory only, so
// a reload or the idle reset forgets it. Live changes (price, availability, removal, scans from scanners on
// the agent's side, staff messages) arrive on one Server-Sent Events stream, which is also the heartbeat.
//
// Only textContent is ever written from data (no innerHTML), and the CSP allows no inline script.
"use strict";

(function () {
  const STRINGS = {
    en: {
      lang_name: "English",
      title: "Shop",
      welcome: "Welcome",
      touch_to_start: "Touch to start",
      home: "Home",
      search: "Search",
      cart: "Cart",
      categories: "Categories",
      all_products: "All products",
      products_count: "{n} products",
      back: "Back",
      more: "Show more",
      search_hint: "Type part of a name, a product number or a barcode.",
      search_results: "“{q}”",
      delete: "Delete",
      clear: "Clear",
      space: "Space",
      add_to_cart: "Add to cart",
      on_shelf: "On the shelf in this store",
      online_only: "Online only: order here, pick up or have it delivered",
      online_only_short: "Online only",
      unavailable: "Not available at the moment",
      continue_on_phone: "Scan to continue on your phone",
      your_cart: "Your cart",
      continue_shopping: "Continue shopping",
      remove: "Remove",
      total: "Total",
      checkout: "Checkout",
      cart_empty: "Your cart is empty. Browse the categories or scan a product.",
      how_to_pay: "How would you like to order?",
      fulfil_phone: "Pay on your phone",
      fulfil_phone_text: "Scan a QR code and pay in the shop's app or website.",
      fulfil_counter: "Pick up at the counter",
      fulfil_counter_text: "We prepare your order; pay and collect it at the counter.",
      fulfil_locker: "Pick up from a locker",
      fulfil_locker_text: "We put your order in a locker; you get a pickup code.",
      fulfil_till: "Pay at the till",
      fulfil_till_text: "Show your order number at the till.",
      thank_you: "Thank you!",
      your_order_number: "Your order number",
      done_phone: "Scan the QR code with your phone to pay.",
      done_counter: "Show this number at the counter to pay and collect your order.",
      done_locker: "We will send your pickup code when your order is in the locker.",
      done_till: "Show this number at the till to pay.",
      done: "Done",
      still_there: "Are you still there?",
      idle_countdown: "In {s} s the cart is emptied and the screen will start over.",
      continue: "Continue",
      added: "Added to cart: {name}",
      scan_unknown: "This code is not a product of this store.",
      not_answering: "The kiosk is not answering. Please try again, or ask a member of staff.",
      pickup: "Pick up an order",
      pickup_hint: "Type or scan your pickup code.",
      pickup_submit: "Pick up",
      pickup_checking: "One moment…",
      pickup_too_short: "Pickup codes have 8 to 12 digits.",
      pickup_shelf: "Shelf {shelf}, slot {slot} is flashing. A member of staff will hand you your order.",
      pickup_wrong: "This code is not valid. Please check it and try again.",
      pickup_locked_out: "Too many wrong codes. Please try again in {seconds} seconds.",
      pickup_elsewhere: "Your parcel is in locker {bank}. Please type your code on that locker's screen.",
      pickup_unavailable: "This order cannot be picked up right now. Please ask a member of staff.",
      order_refused: "The order could not be placed. Please try again, or order at the counter.",
      store_full: "Orders cannot be taken here right now. Please order at the counter.",
      too_many: "Too many orders from this kiosk. Please wait a moment and try again.",
      removed_from_cart: "{name} is no longer available and was taken out of your cart.",
      max_lines: "The cart is full.",
      no_results: "Nothing found.",
      loading: "One moment…",
    },
    "zh-CN": {
      lang_name: "中文",
      title: "商店",
      welcome: "欢迎光临",
      touch_to_start: "点击开始",
      home: "首页",
      search: "搜索",
      cart: "购物车",
      categories: "商品分类",
      all_products: "全部商品",
      products_count: "{n} 件商品",
      back: "返回",
      more: "显示更多",
      search_hint: "输入商品名称的一部分、商品编号或条码。",
      search_results: "“{q}”",
      delete: "删除",
      clear: "清除",
      space: "空格",
      add_to_cart: "加入购物车",
      on_shelf: "本店货架有售",
      online_only: "仅限线上：在此下单，到店自提或送货上门",
      online_only_short: "仅限线上",
      unavailable: "暂时缺货",
      continue_on_phone: "扫码在手机上继续",
      your_cart: "购物车",
      continue_shopping: "继续购物",
      remove: "移除",
      total: "合计",
      checkout: "结算",
      cart_empty: "购物车是空的。请浏览分类或扫描商品。",
      how_to_pay: "请选择下单方式",
      fulfil_phone: "手机支付",
      fulfil_phone_text: "扫描二维码，在商城应用或网站中支付。",
      fulfil_counter: "柜台自提",
      fulfil_counter_text: "我们为您备货，到服务台付款取货。",
      fulfil_locker: "自提柜取货",
      fulfil_locker_text: "订单放入自提柜后，您将收到取件码。",
      fulfil_till: "收银台付款",
      fulfil_till_text: "在收银台出示订单号付款。",
      thank_you: "谢谢！",
      your_order_number: "您的订单号",
      done_phone: "请用手机扫描二维码付款。",
      done_counter: "请在服务台出示此号码付款取货。",
      done_locker: "订单放入自提柜后，我们会发送取件码。",
      done_till: "请在收银台出示此号码付款。",
      done: "完成",
      still_there: "您还在吗？",
      idle_countdown: "{s} 秒后将清空购物车并返回首页。",
      continue: "继续",
      added: "已加入购物车：{name}",
      scan_unknown: "此条码不是本店商品。",
      not_answering: "终端暂无响应，请重试或联系店员。",
      pickup: "取件",
      pickup_hint: "请输入或扫描取件码。",
      pickup_submit: "取件",
      pickup_checking: "请稍候…",
      pickup_too_short: "取件码为 8 到 12 位数字。",
      pickup_shelf: "货架 {shelf} 第 {slot} 格的标签正在闪烁。工作人员会把订单交给您。",
      pickup_wrong: "此取件码无效，请检查后重试。",
      pickup_locked_out: "错误次数过多，请 {seconds} 秒后再试。",
      pickup_elsewhere: "您的包裹在 {bank} 号取件柜，请在该取件柜的屏幕上输入取件码。",
      pickup_unavailable: "现在无法取件，请联系工作人员。",
      order_refused: "下单失败，请重试或到服务台下单。",
      store_full: "此终端暂时无法下单，请到服务台下单。",
      too_many: "下单过于频繁，请稍后再试。",
      removed_from_cart: "{name} 已下架，已从购物车中移除。",
      max_lines: "购物车已满。",
      no_results: "没有找到商品。",
      loading: "请稍候…",
    },
  };

  const params = new URLSearchParams(window.location.search);
  const KIOSK = document.body.dataset.kiosk || "";
  const API = "/kiosk/" + encodeURIComponent(KIOSK) + "/api";
  // Idle warning after idle_s without a touch, reset warning_s later (from the kiosk's config).
  // `?idle_s=N&warning_s=M` override them, at least 3 and 2 s: the browser tests watch the reset without
  // waiting 75 s.
  const MIN_IDLE_S = 3;
  const MIN_WARNING_S = 2;
  // A keyboard-wedge scanner types a whole code within milliseconds and ends with Enter; people cannot
  // type that fast. A run counts as a scan when its keys came on average under 50 ms apart (no single gap
  // over 200 ms: a busy renderer may delay one key) and it has at least 4 characters.
  const WEDGE_AVG_GAP_MS = 50;
  const WEDGE_MAX_GAP_MS = 200;
  const WEDGE_MIN_CHARS = 4;
  const WEDGE_MAX_CHARS = 512;
  const PAGE_SIZE = 24;
  const REQUEST_TIMEOUT_MS = 15000;
  const TOAST_MS = 4000;
  const HIGHLIGHT_MS = 5000;
  const HEARTBEAT_MS = 20000; // the agent counts a heartbeat for 45 s

  const $ = (id) => document.getElementById(id);

  const config = {
    // The kiosk's language (from [[kiosks]], in the page so the first paint is right); ?lang= overrides.
    lang: STRINGS[params.get("lang") || ""] ? params.get("lang") : STRINGS[document.body.dataset.lang] ? document.body.dataset.lang : "en",
    currency: "CNY",
    fulfilments: ["till"],
    idle_s: 60,
    warning_s: 15,
    max_lines: 50,
    max_quantity: 99,
  };

  const state = {
    lang: config.lang,
    screen: "attract",
    // Product JSON by sku, as last heard from the agent (lists, product page, live updates).
    products: new Map(),
    cart: [], // [{sku, quantity}] in the order added
    list: { category: null, q: "", title: "", offset: 0, total: 0, skus: [] },
    productSku: null,
    productQty: 1,
    search: "",
    busy: false,
    order: null,
    highlights: [],
    highlightIndex: 0,
    reloadPending: false,
    productFrom: "home",
    // Live updates, numbered as they arrive; liveAt holds each sku's latest number (see remember()).
    liveSeq: 0,
    liveAt: new Map(),
  };

  // -- text -----------------------------------------------------------------------------------------

  function t(key, vars) {
    const table = STRINGS[state.lang] || STRINGS.en;
    let text = Object.prototype.hasOwnProperty.call(table, key) ? table[key] : STRINGS.en[key] || key;
    for (const [name, value] of Object.entries(vars || {})) {
      text = text.split("{" + name + "}").join(String(value));
    }
    return text;
  }

  // Amounts are decimal strings ("12.8"); sums are kept in ten-thousandths (the catalog's 4 decimals)
  // as integers, never floats. The order's real total is the agent's (total_text).
  function toUnits(amount) {
    const match = /^(\d+)(?:\.(\d{1,4}))?$/.exec(String(amount || ""));
    if (!match) {
      return 0;
    }
    return Number(match[1]) * 10000 + Number((match[2] || "").padEnd(4, "0"));
  }

  function money(units) {
    try {
      // narrowSymbol: "¥12.80" in English too, as the agent's price_text writes it.
      return new Intl.NumberFormat(config.lang, {
        style: "currency",
        currency: config.currency,
        currencyDisplay: "narrowSymbol",
      }).format(units / 10000);
    } catch (_error) {
      return (units / 10000).toFixed(2) + " " + config.currency;
    }
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined && text !== null) {
      node.textContent = String(text);
    }
    return node;
  }

  function qrUrl(data) {
    return API + "/qr?data=" + encodeURIComponent(data);
  }

  // A picture from the catalog (https only, the CSP allows no other) or, without one or when it does not
  // load (the store's internet is down), a tile with the name's first character.
  function fillPicture(box, product) {
    const initial = Array.from(String(product.name || "?"))[0] || "?";
    const key = product.sku + "|" + String(product.image_url || "") + "|" + initial;
    if (box.dataset.key === key) {
      return; // already shows it: no flicker on every re-render
    }
    box.dataset.key = key;
    box.textContent = "";
    const placeholder = () => {
      if (box.dataset.key !== key) {
        return; // a late error for a picture this box no longer shows
      }
      box.textContent = "";
      box.appendChild(el("span", "placeholder", initial));
    };
    const url = typeof product.image_url === "string" ? product.image_url : "";
    if (!url.startsWith("https://")) {
      placeholder();
      return;
    }
    const img = el("img");
    img.alt = "";
    img.draggable = false;
    img.addEventListener("error", placeholder, { once: true });
    img.src = url;
    box.appendChild(img);
  }

  // -- talking to the agent ---------------------------------------------------------------------------

  // Resolves to {status, body} (body null when not JSON); rejects when the agent did not answer at all.
  async function call(method, path, body) {
    const controller = new AbortController();
    const timer = window.setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    const headers = { Accept: "application/json" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
    }
    try {
      const response = await fetch(API + path, {
        method: method,
        headers: headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
        signal: controller.signal,
      });
      let data = null;
      try {
        data = await response.json();
      } catch (_error) {
        data = null;
      }
      return { status: response.status, body: data };
    } finally {
      window.clearTimeout(timer);
    }
  }

  // A fetch answer can be overtaken by a live update: a price changed while the request was in flight
  // arrives over SSE first, and the older answer must not paint over it. So an answer says when its
  // request was sent (`sentAt`, the live sequence then) and is ignored for a sku heard live since:
  // the page keeps what it heard live, or null for a product removed meanwhile.
  function remember(product, sentAt) {
    if (!product || typeof product.sku !== "string") {
      return product;
    }
    if (sentAt !== undefined && (state.liveAt.get(product.sku) || 0) > sentAt) {
      return state.products.get(product.sku) || null;
    }
    state.products.set(product.sku, product);
    return product;
  }

  function heardLive(sku) {
    state.liveSeq += 1;
    state.liveAt.set(sku, state.liveSeq);
  }

  // -- screens ------------------------------------------------------------------------------------------

  const SCREENS = ["home", "list", "search", "product", "cart", "checkout", "done", "pickup"];

  function showScreen(name) {
    state.screen = name;
    $("attract").hidden = name !== "attract";
    for (const key of SCREENS) {
      $("screen-" + key).hidden = key !== name;
    }
    document.body.dataset.screen = name;
    if (name === "checkout" || name === "done" || name === "attract") {
      $("toast").hidden = true; // an "added" note is old news here
    }
    touched();
  }

  function applyLang() {
    document.documentElement.lang = state.lang;
    document.title = t("title");
    for (const node of document.querySelectorAll("[data-i18n]")) {
      node.textContent = t(node.dataset.i18n);
    }
    const other = state.lang === "en" ? "zh-CN" : "en";
    $("lang-button").textContent = STRINGS[other].lang_name;
    $("lang-button").lang = other;
    // The attract screen invites in both languages.
    $("start-other").textContent = STRINGS[other].touch_to_start;
    $("start-other").lang = other;
    renderAll();
  }

  function renderAll() {
    renderCartCount();
    renderHighlight();
    if (state.screen === "home") {
      loadCategories();
    } else if (state.screen === "list") {
      renderList();
    } else if (state.screen === "product") {
      renderProduct();
    } else if (state.screen === "cart") {
      renderCart();
    } else if (state.screen === "checkout") {
      renderCheckout();
    } else if (state.screen === "done") {
      renderDone();
    }
  }

  let bannerTimer = null;

  function banner(text) {
    window.clearTimeout(bannerTimer);
    $("banner").textContent = text || "";
    $("banner").hidden = !text;
    if (text) {
      bannerTimer = window.setTimeout(() => banner(""), 30000);
    }
  }

  let toastTimer = null;

  function toast(text, kind) {
    window.clearTimeout(toastTimer);
    const node = $("toast");
    node.textContent = text;
    node.className = "toast" + (kind ? " " + kind : "");
    node.dataset.kind = kind || "ok";
    node.hidden = false;
    toastTimer = window.setTimeout(() => {
      node.hidden = true;
    }, TOAST_MS);
  }

  // -- attract ------------------------------------------------------------------------------------------

  async function loadHighlights() {
    try {
      const sentAt = state.liveSeq;
      const answer = await call("GET", "/products?limit=100");
      if (answer.status !== 200 || !answer.body || !Array.isArray(answer.body.products)) {
        return;
      }
      state.highlights = answer.body.products.map((p) => remember(p, sentAt)).filter((p) => p).filter((p) => p.promotion && p.available).map((p) => p.sku);
    } catch (_error) {
      return;
    }
    renderHighlight();
  }

  function renderHighlight() {
    const skus = state.highlights.filter((sku) => state.products.has(sku));
    $("highlight").hidden = skus.length === 0;
    if (skus.length === 0) {
      return;
    }
    const product = state.products.get(skus[state.highlightIndex % skus.length]);
    fillPicture($("highlight-picture"), product);
    $("highlight-promotion").textContent = product.promotion || "";
    $("highlight-name").textContent = product.name;
    $("highlight-price").textContent = product.price_text;
  }

  function rotateHighlight() {
    state.highlightIndex += 1;
    if (state.screen === "attract") {
      renderHighlight();
    }
  }

  function start() {
    showHome();
  }

  // -- categories and lists ---------------------------------------------------------------------------

  function showHome() {
    showScreen("home");
    loadCategories();
  }

  async function loadCategories() {
    let answer;
    try {
      answer = await call("GET", "/categories");
    } catch (_error) {
      banner(t("not_answering"));
      return;
    }
    if (answer.status !== 200 || !answer.body || !Array.isArray(answer.body.categories)) {
      return;
    }
    const grid = $("category-grid");
    grid.textContent = "";
    const all = el("button", "category category-all");
    all.type = "button";
    all.dataset.category = "";
    all.appendChild(el("span", "category-name", t("all_products")));
    all.addEventListener("click", () => openList(null, "", t("all_products")));
    grid.appendChild(all);
    for (const category of answer.body.categories) {
      const button = el("button", "category");
      button.type = "button";
      button.dataset.category = String(category.id);
      button.appendChild(el("span", "category-name", category.name));
      button.appendChild(el("span", "category-count", t("products_count", { n: category.count })));
      button.addEventListener("click", () => openList(String(category.id), "", String(category.name)));
      grid.appendChild(button);
    }
  }

  function openList(category, q, title) {
    state.list = { category: category, q: q, title: title, offset: 0, total: 0, skus: [] };
    showScreen("list");
    $("list-scroll").scrollTop = 0;
    renderList();
    loadMore();
  }

  async function loadMore() {
    const list = state.list;
    const query = new URLSearchParams({ offset: String(list.offset), limit: String(PAGE_SIZE) });
    if (list.category !== null) {
      query.set("category", list.category);
    }
    if (list.q) {
      query.set("q", list.q);
    }
    $("list-message").textContent = t("loading");
    $("list-message").className = "message";
    let answer;
    const sentAt = state.liveSeq;
    try {
      answer = await call("GET", "/products?" + query.toString());
    } catch (_error) {
      $("list-message").textContent = t("not_answering");
      $("list-message").className = "message error";
      return;
    }
    if (list !== state.list) {
      return; // the shopper went elsewhere meanwhile
    }
    if (answer.status !== 200 || !answer.body || !Array.isArray(answer.body.products)) {
      $("list-message").textContent = t("not_answering");
      $("list-message").className = "message error";
      return;
    }
    for (const fetched of answer.body.products) {
      const product = remember(fetched, sentAt);
      if (product && !list.skus.includes(product.sku)) {
        list.skus.push(product.sku);
      }
    }
    list.offset += answer.body.products.length;
    list.total = Number(answer.body.total) || list.skus.length;
    renderList();
  }

  function productCard(product) {
    const card = el("button", "card" + (product.available ? "" : " unavailable"));
    card.type = "button";
    card.dataset.sku = product.sku;
    const picture = el("div", "picture");
    fillPicture(picture, product);
    card.appendChild(picture);
    if (product.promotion) {
      card.appendChild(el("span", "promotion", product.promotion));
    }
    card.appendChild(el("span", "card-name", product.name));
    card.appendChild(el("span", "card-price", product.price_text));
    if (!product.on_shelf) {
      card.appendChild(el("span", "badge online", t("online_only_short")));
    }
    card.addEventListener("click", () => openProduct(product.sku));
    return card;
  }

  function renderList() {
    const list = state.list;
    $("list-title").textContent = list.title;
    const grid = $("product-grid");
    grid.textContent = "";
    for (const sku of list.skus) {
      const product = state.products.get(sku);
      if (product) {
        grid.appendChild(productCard(product));
      }
    }
    $("list-more").hidden = list.offset >= list.total;
    const message = list.skus.length === 0 && list.offset >= list.total ? t("no_results") : "";
    $("list-message").textContent = message;
    $("list-message").className = "message";
  }

  // -- search -------------------------------------------------------------------------------------------

  // -- pick up an order -------------------------------------------------------------------------------

  const pickup = { code: "", busy: false };

  function showPickup() {
    pickup.code = "";
    renderPickup();
    pickupMessage("", "");
    showScreen("pickup");
  }

  function renderPickup() {
    $("pickup-field").textContent = pickup.code;
    $("pickup-field").dataset.value = pickup.code;
  }

  function pickupMessage(text, kind) {
    const node = $("pickup-message");
    node.textContent = text;
    node.className = "message pickup-message" + (kind ? " " + kind : "");
  }

  function onPickupKey(event) {
    const button = event.target.closest("button[data-key]");
    if (!button) {
      return;
    }
    const key = button.dataset.key;
    if (key === "enter") {
      submitPickup(pickup.code);
      return;
    }
    if (key === "clear") {
      pickup.code = "";
    } else if (key === "delete") {
      pickup.code = pickup.code.slice(0, -1);
    } else if (/^[0-9]$/.test(key) && pickup.code.length < 12) {
      pickup.code += key;
    }
    renderPickup();
  }

  // The agent decides everything (right or wrong, lockouts, where the order is); the page only says it.
  async function submitPickup(code) {
    if (pickup.busy) {
      return;
    }
    if (!/^[0-9]{8,12}$/.test(code)) {
      pickupMessage(t("pickup_too_short"), "error");
      return;
    }
    pickup.busy = true;
    pickupMessage(t("pickup_checking"), "");
    let answer;
    try {
      answer = await call("POST", "/pickup", { code: code });
    } catch (_error) {
      pickupMessage(t("not_answering"), "error");
      return;
    } finally {
      pickup.busy = false;
    }
    pickup.code = "";
    renderPickup();
    const body = answer.body || {};
    if (answer.status === 200 && body.status === "shelf" && body.slot) {
      pickupMessage(t("pickup_shelf", { shelf: body.slot.shelf_name, slot: body.slot.position }), "ok");
    } else if (answer.status === 429) {
      pickupMessage(t("pickup_locked_out", { seconds: Number(body.seconds_left) || 30 }), "error");
    } else if (answer.status === 200 && body.status === "wrong") {
      pickupMessage(t("pickup_wrong"), "error");
    } else if (answer.status === 409 && body.status === "elsewhere" && body.bank) {
      pickupMessage(t("pickup_elsewhere", { bank: body.bank }), "");
    } else if (answer.status === 503) {
      pickupMessage(t("pickup_unavailable"), "error");
    } else {
      pickupMessage(t("not_answering"), "error");
    }
  }

  function showSearch() {
    showScreen("search");
    renderSearch();
  }

  function renderSearch() {
    $("search-field").textContent = state.search;
    $("search-field").dataset.value = state.search;
  }

  let searchTimer = null;
  let searchSeq = 0;

  // Results as the shopper types (a quarter second after the last key, not one request per key).
  function searchSoon() {
    window.clearTimeout(searchTimer);
    searchTimer = window.setTimeout(searchNow, 250);
  }

  async function searchNow() {
    const q = state.search.trim();
    const seq = ++searchSeq;
    const grid = $("search-grid");
    if (!q) {
      grid.textContent = "";
      $("search-message").textContent = "";
      return;
    }
    let answer;
    const sentAt = state.liveSeq;
    try {
      answer = await call("GET", "/products?" + new URLSearchParams({ q: q, limit: String(PAGE_SIZE) }).toString());
    } catch (_error) {
      $("search-message").textContent = t("not_answering");
      return;
    }
    if (seq !== searchSeq || state.screen !== "search") {
      return; // a newer search, or the shopper left
    }
    const products = answer.status === 200 && answer.body && Array.isArray(answer.body.products) ? answer.body.products : [];
    grid.textContent = "";
    for (const fetched of products) {
      const product = remember(fetched, sentAt);
      if (product) {
        grid.appendChild(productCard(product));
      }
    }
    $("search-message").textContent = products.length ? "" : t("no_results");
  }

  function onKeyboard(event) {
    const button = event.target.closest("button[data-key]");
    if (!button) {
      return;
    }
    const key = button.dataset.key;
    if (key === "enter") {
      const q = state.search.trim();
      if (q) {
        openList(null, q, t("search_results", { q: q }));
      }
      return;
    }
    if (key === "delete") {
      state.search = Array.from(state.search).slice(0, -1).join("");
    } else if (key === "clear") {
      state.search = "";
    } else if (state.search.length < 100) {
      state.search += key;
    }
    renderSearch();
    searchSoon();
  }

  // -- product page -------------------------------------------------------------------------------------

  async function openProduct(sku) {
    // Back goes where the shopper came from: a list, the search results, or home (a scan, the attract screen).
    state.productFrom = state.screen === "list" || state.screen === "search" ? state.screen : "home";
    state.productSku = sku;
    state.productQty = 1;
    showScreen("product");
    renderProduct();
    // Fresh from the agent: a list may be a minute old; live updates keep it fresh from here on.
    const sentAt = state.liveSeq;
    try {
      const answer = await call("GET", "/products/" + encodeURIComponent(sku));
      if (answer.status === 200 && answer.body) {
        remember(answer.body, sentAt);
        if (state.productSku === sku) {
          renderProduct();
        }
      }
    } catch (_error) {
      // What the list had is shown; the price still comes from the agent at order time.
    }
  }

  function renderProduct() {
    const product = state.products.get(state.productSku);
    if (!product) {
      return;
    }
    $("product").dataset.sku = product.sku;
    fillPicture($("product-picture"), product);
    $("product-name").textContent = product.name;
    $("product-promotion").textContent = product.promotion || "";
    $("product-promotion").hidden = !product.promotion;
    $("product-price").textContent = product.price_text;
    $("product-former-price").textContent = product.former_price_text || "";
    $("product-unit-price").textContent = product.unit_price_text || "";
    const badge = $("product-badge");
    if (!product.available) {
      badge.textContent = t("unavailable");
      badge.className = "badge unavailable";
    } else if (product.on_shelf) {
      badge.textContent = t("on_shelf");
      badge.className = "badge";
    } else {
      badge.textContent = t("online_only");
      badge.className = "badge online";
    }
    badge.dataset.kind = !product.available ? "unavailable" : product.on_shelf ? "on_shelf" : "online_only";
    $("product-qty").textContent = String(state.productQty);
    $("product-add").disabled = !product.available;
    $("product-minus").disabled = state.productQty <= 1;
    $("product-plus").disabled = state.productQty >= config.max_quantity;
    const phone = typeof product.phone_url === "string" && product.phone_url ? product.phone_url : "";
    $("product-phone").hidden = !phone;
    const qr = $("product-qr");
    if (phone && qr.dataset.data !== phone) {
      qr.dataset.data = phone;
      qr.src = qrUrl(phone);
    }
  }

  // -- cart ---------------------------------------------------------------------------------------------

  // Adds to the page's cart and tells the agent (a cart.add event for the store's figures). The agent
  // refuses an unavailable product (409); its answer also refreshes the product.
  async function addToCart(sku, quantity) {
    const product = state.products.get(sku);
    if (!product || !product.available) {
      toast(t("unavailable"), "error");
      return false;
    }
    const line = state.cart.find((l) => l.sku === sku);
    if (!line && state.cart.length >= config.max_lines) {
      toast(t("max_lines"), "error");
      return false;
    }
    if (line) {
      line.quantity = Math.min(config.max_quantity, line.quantity + quantity);
    } else {
      state.cart.push({ sku: sku, quantity: Math.min(config.max_quantity, quantity) });
    }
    renderCartCount();
    toast(t("added", { name: product.name }), "ok");
    const sentAt = state.liveSeq;
    try {
      const answer = await call("POST", "/cart/add", { sku: sku, quantity: Math.min(config.max_quantity, quantity) });
      if (answer.body && answer.body.product) {
        remember(answer.body.product, sentAt);
      } else if (answer.status === 200 && answer.body) {
        remember(answer.body, sentAt);
      }
      if (answer.status === 409 || answer.status === 404) {
        dropFromCart(sku);
      }
    } catch (_error) {
      // The cart is the page's; the event is the agent's business. Nothing to tell the shopper.
    }
    return true;
  }

  function dropFromCart(sku) {
    const before = state.cart.length;
    state.cart = state.cart.filter((l) => l.sku !== sku);
    if (state.cart.length !== before) {
      const product = state.products.get(sku);
      banner(t("removed_from_cart", { name: product ? product.name : sku }));
      renderCartCount();
      if (state.screen === "cart" || state.screen === "checkout") {
        renderCart();
        renderCheckout();
      }
    }
  }

  function cartUnits() {
    let units = 0;
    for (const line of state.cart) {
      const product = state.products.get(line.sku);
      if (product) {
        units += toUnits(product.price) * line.quantity;
      }
    }
    return units;
  }

  function renderCartCount() {
    const count = state.cart.reduce((sum, line) => sum + line.quantity, 0);
    $("cart-count").textContent = String(count);
    $("cart-count").dataset.count = String(count);
  }

  function quantityControl(value, onMinus, onPlus, minusDisabled, plusDisabled) {
    const box = el("div", "quantity");
    const minus = el("button", "qty-button qty-minus", "−");
    minus.type = "button";
    minus.disabled = minusDisabled;
    minus.addEventListener("click", onMinus);
    const plus = el("button", "qty-button qty-plus", "+");
    plus.type = "button";
    plus.disabled = plusDisabled;
    plus.addEventListener("click", onPlus);
    box.append(minus, el("span", "qty", value), plus);
    return box;
  }

  function setLineQuantity(sku, quantity) {
    const line = state.cart.find((l) => l.sku === sku);
    if (!line) {
      return;
    }
    line.quantity = Math.max(1, Math.min(config.max_quantity, quantity));
    renderCartCount();
    renderCart();
  }

  function renderCart() {
    const list = $("cart-lines");
    list.textContent = "";
    for (const line of state.cart) {
      const product = state.products.get(line.sku);
      if (!product) {
        continue;
      }
      const item = el("li", "cart-line");
      item.dataset.sku = line.sku;
      item.dataset.quantity = String(line.quantity);
      const name = el("span", "line-name", product.name);
      name.appendChild(el("span", "line-unit", product.price_text));
      const remove = el("button", "remove-button", t("remove"));
      remove.type = "button";
      remove.addEventListener("click", () => {
        state.cart = state.cart.filter((l) => l.sku !== line.sku);
        renderCartCount();
        renderCart();
      });
      item.append(
        name,
        quantityControl(
          line.quantity,
          () => setLineQuantity(line.sku, line.quantity - 1),
          () => setLineQuantity(line.sku, line.quantity + 1),
          line.quantity <= 1,
          line.quantity >= config.max_quantity,
        ),
        el("span", "line-total", money(toUnits(product.price) * line.quantity)),
        remove,
      );
      list.appendChild(item);
    }
    $("cart-message").textContent = state.cart.length ? "" : t("cart_empty");
    $("cart-total").textContent = money(cartUnits());
    $("cart-checkout").disabled = state.cart.length === 0;
  }

  function showCart() {
    showScreen("cart");
    renderCart();
  }

  // -- checkout and order ---------------------------------------------------------------------------------

  function showCheckout() {
    if (state.cart.length === 0) {
      return;
    }
    showScreen("checkout");
    $("checkout-message").textContent = "";
    $("checkout-message").className = "message";
    renderCheckout();
  }

  function renderCheckout() {
    $("checkout-total").textContent = money(cartUnits());
    const choices = $("choices");
    choices.textContent = "";
    for (const fulfilment of config.fulfilments) {
      const button = el("button", "choice");
      button.type = "button";
      button.dataset.fulfilment = fulfilment;
      button.disabled = state.busy || state.cart.length === 0;
      button.append(el("span", "choice-title", t("fulfil_" + fulfilment)), el("span", "choice-text", t("fulfil_" + fulfilment + "_text")));
      button.addEventListener("click", () => placeOrder(fulfilment));
      choices.appendChild(button);
    }
  }

  function checkoutError(text) {
    $("checkout-message").textContent = text;
    $("checkout-message").className = "message error";
  }

  async function placeOrder(fulfilment) {
    if (state.busy || state.cart.length === 0) {
      return;
    }
    state.busy = true;
    renderCheckout();
    const items = state.cart.map((l) => ({ sku: l.sku, quantity: l.quantity }));
    let answer;
    try {
      answer = await call("POST", "/orders", { items: items, fulfilment: fulfilment });
    } catch (_error) {
      state.busy = false;
      renderCheckout();
      checkoutError(t("not_answering"));
      return;
    }
    state.busy = false;
    if ((answer.status === 201 || answer.status === 200) && answer.body && answer.body.order_number) {
      state.order = answer.body;
      state.cart = [];
      renderCartCount();
      showScreen("done");
      renderDone();
      return;
    }
    renderCheckout();
    if (answer.status === 409 && answer.body && typeof answer.body.sku === "string") {
      // Gone or unavailable since it was added: out of the cart, the shopper decides again.
      dropFromCart(answer.body.sku);
      checkoutError(t("removed_from_cart", { name: (state.products.get(answer.body.sku) || { name: answer.body.sku }).name }));
    } else if (answer.status === 429) {
      checkoutError(t("too_many"));
    } else if (answer.status === 503) {
      checkoutError(t("store_full"));
    } else {
      checkoutError(t("order_refused"));
    }
  }

  function renderDone() {
    const order = state.order;
    if (!order) {
      return;
    }
    $("order-number").textContent = order.order_number;
    const fulfilment = String(order.fulfilment || "till");
    $("done-text").textContent = t("done_" + fulfilment);
    $("done-total").textContent = order.total_text || "";
    const data = order.qr_data || (fulfilment === "phone" ? order.checkout_url : order.order_number);
    const qr = $("done-qr");
    qr.hidden = !data;
    if (data && qr.dataset.data !== data) {
      qr.dataset.data = data;
      qr.src = qrUrl(data);
    }
  }

  // -- scans ------------------------------------------------------------------------------------------------

  // A scan's answer, from this page's scanner (POST /scan) or a scanner on the agent's side (SSE `scan`).
  function onScanAnswer(answer, sentAt) {
    if (answer && answer.status === "ok" && answer.product) {
      remember(answer.product, sentAt);
      if (state.screen === "attract") {
        showCart();
      }
      addToCart(answer.product.sku, 1).then(() => {
        if (state.screen === "cart") {
          renderCart();
        }
      });
      if (state.screen === "cart") {
        renderCart();
      }
    } else {
      const message = answer && typeof answer.message === "string" && answer.message ? answer.message : t("scan_unknown");
      toast(message, "error");
    }
  }

  async function submitScan(code) {
    touched();
    if (state.screen === "pickup") {
      submitPickup(code.trim()); // a code scanned from the customer's phone
      return;
    }
    let answer;
    const sentAt = state.liveSeq;
    try {
      answer = await call("POST", "/scan", { code: code });
    } catch (_error) {
      toast(t("not_answering"), "error");
      return;
    }
    if (answer.status === 200 && answer.body) {
      onScanAnswer(answer.body, sentAt);
    } else {
      onScanAnswer({ status: "unknown" });
    }
  }

  const wedge = { chars: [], times: [] };

  // The keyboard port belongs to the scanner (the on-screen keyboard is for people): every key is taken
  // here and none reaches the page, so nothing is typed into the search box, Tab cannot move focus,
  // and Ctrl +/- cannot zoom.
  function onKeyDown(event) {
    event.preventDefault();
    if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    const now = event.timeStamp || performance.now();
    const last = wedge.times.length ? wedge.times[wedge.times.length - 1] : null;
    if (last !== null && now - last > WEDGE_MAX_GAP_MS) {
      wedge.chars = [];
      wedge.times = [];
    }
    if (event.key === "Enter") {
      const chars = wedge.chars;
      const times = wedge.times;
      wedge.chars = [];
      wedge.times = [];
      if (chars.length < WEDGE_MIN_CHARS || last === null) {
        return;
      }
      const average = (now - times[0]) / chars.length;
      if (average <= WEDGE_AVG_GAP_MS) {
        submitScan(chars.join(""));
      }
      return;
    }
    if (event.key.length === 1 && wedge.chars.length < WEDGE_MAX_CHARS) {
      wedge.chars.push(event.key);
      wedge.times.push(now);
    }
  }

  // -- live updates ---------------------------------------------------------------------------------------------

  function onProductChanged(product) {
    const known = state.products.has(product.sku);
    heardLive(product.sku);
    remember(product);
    // The attract screen's promotions follow the catalog too.
    const highlighted = state.highlights.includes(product.sku);
    if (product.promotion && product.available && !highlighted) {
      state.highlights.push(product.sku);
    } else if (!(product.promotion && product.available) && highlighted) {
      state.highlights = state.highlights.filter((sku) => sku !== product.sku);
    }
    if (!known) {
      return;
    }
    if (!product.available && state.cart.some((l) => l.sku === product.sku)) {
      dropFromCart(product.sku);
    }
    // Re-render whatever shows it (cheap: these are small views).
    if (state.screen === "product" && state.productSku === product.sku) {
      renderProduct();
    } else if (state.screen === "list" || state.screen === "search") {
      for (const card of document.querySelectorAll('.card[data-sku="' + CSS.escape(product.sku) + '"]')) {
        card.replaceWith(productCard(product));
      }
    } else if (state.screen === "cart") {
      renderCart();
    } else if (state.screen === "checkout") {
      renderCheckout();
    } else if (state.screen === "attract") {
      renderHighlight();
    }
  }

  function parse(event) {
    try {
      return JSON.parse(event.data);
    } catch (_error) {
      return null;
    }
  }

  function connectLive() {
    // EventSource reconnects by itself (the agent restarting, a network blip); holding it open is the
    // kiosk's heartbeat.
    const source = new EventSource(API + "/live");
    source.addEventListener("price", (event) => {
      const product = parse(event);
      if (product && typeof product.sku === "string") {
        onProductChanged(product);
      }
    });
    source.addEventListener("removed", (event) => {
      const data = parse(event);
      if (data && typeof data.sku === "string") {
        heardLive(data.sku);
        dropFromCart(data.sku);
        state.highlights = state.highlights.filter((sku) => sku !== data.sku);
        state.products.delete(data.sku);
      }
    });
    source.addEventListener("scan", (event) => {
      const data = parse(event);
      if (data) {
        onScanAnswer(data);
      }
    });
    source.addEventListener("message", (event) => {
      const data = parse(event);
      if (data && typeof data.text === "string") {
        banner(data.text);
      }
    });
    // A new configuration or version (or this page fell behind on updates): reload, but not under a
    // shopper's fingers; with someone at the screen it waits for the next reset (Done or idle).
    source.addEventListener("reload", () => {
      if (state.screen === "attract") {
        window.location.reload();
      } else {
        state.reloadPending = true;
      }
    });
    source.addEventListener("hello", () => {
      document.body.dataset.live = "true";
    });
    source.addEventListener("error", () => {
      document.body.dataset.live = "false";
    });
    // Behind a proxy that buffers the stream the agent never sees it open: a heartbeat then keeps the
    // kiosk counted as online (docs/kiosk-api.md, POST /heartbeat).
    window.setInterval(() => {
      if (source.readyState !== EventSource.OPEN || document.body.dataset.live !== "true") {
        call("POST", "/heartbeat", {}).catch(() => undefined);
      }
    }, HEARTBEAT_MS);
  }

  // -- idle reset -------------------------------------------------------------------------------------------------

  let idleTimer = null;
  let warningTimer = null;
  let warningUntil = 0;

  function touched() {
    window.clearTimeout(idleTimer);
    idleTimer = null;
    if (!$("idle-overlay").hidden) {
      hideWarning();
    }
    if (state.screen !== "attract") {
      idleTimer = window.setTimeout(showWarning, config.idle_s * 1000);
    }
  }

  function showWarning() {
    warningUntil = performance.now() + config.warning_s * 1000;
    $("idle-overlay").hidden = false;
    tickWarning();
    warningTimer = window.setInterval(tickWarning, 250);
  }

  function tickWarning() {
    const left = Math.ceil((warningUntil - performance.now()) / 1000);
    if (left <= 0) {
      reset();
      return;
    }
    $("idle-text").textContent = t("idle_countdown", { s: left });
    $("idle-text").dataset.secondsLeft = String(left);
  }

  function hideWarning() {
    window.clearInterval(warningTimer);
    warningTimer = null;
    $("idle-overlay").hidden = true;
  }

  // Nobody is there: the next shopper finds the attract screen, an empty cart, the device's language.
  function reset() {
    if (state.reloadPending) {
      window.location.reload(); // a fresh page is a reset too
      return;
    }
    hideWarning();
    window.clearTimeout(idleTimer);
    idleTimer = null;
    state.cart = [];
    state.search = "";
    pickup.code = ""; // the next customer never sees a code typed before
    state.order = null;
    state.productSku = null;
    state.busy = false;
    state.list = { category: null, q: "", title: "", offset: 0, total: 0, skus: [] };
    state.lang = config.lang;
    $("toast").hidden = true;
    banner("");
    showScreen("attract");
    applyLang();
    renderSearch();
    $("search-grid").textContent = "";
    $("search-message").textContent = "";
    document.body.dataset.resets = String(Number(document.body.dataset.resets || "0") + 1);
  }

  // -- start ----------------------------------------------------------------------------------------------

  function limit(raw, fallback, minimum) {
    const n = Number.parseInt(raw === null || raw === undefined ? "" : String(raw), 10);
    return Number.isFinite(n) ? Math.max(n, minimum) : fallback;
  }

  async function loadConfig() {
    try {
      const answer = await call("GET", "/config");
      if (answer.status === 200 && answer.body) {
        const body = answer.body;
        if (!params.get("lang") && STRINGS[body.lang]) {
          config.lang = body.lang;
        }
        if (typeof body.currency === "string") {
          config.currency = body.currency;
        }
        if (Array.isArray(body.fulfilments) && body.fulfilments.length) {
          config.fulfilments = body.fulfilments.filter((f) => ["phone", "counter", "locker", "till"].includes(f));
        }
        config.idle_s = limit(body.idle_s, config.idle_s, MIN_IDLE_S);
        config.warning_s = limit(body.warning_s, config.warning_s, MIN_WARNING_S);
        config.max_lines = limit(body.max_lines, config.max_lines, 1);
        config.max_quantity = limit(body.max_quantity, config.max_quantity, 1);
        // Only a store with pickup orders offers the code entry.
        $("pickup-button").hidden = body.pickup !== true;
      }
    } catch (_error) {
      banner(t("not_answering"));
    }
    config.idle_s = limit(params.get("idle_s"), config.idle_s, MIN_IDLE_S);
    config.warning_s = limit(params.get("warning_s"), config.warning_s, MIN_WARNING_S);
  }

  function on(id, handler) {
    $(id).addEventListener("click", handler);
  }

  async function init() {
    // Kiosk hygiene: no context menu (long press), no drag of text or images, no selection, no zoom.
    document.addEventListener("contextmenu", (event) => event.preventDefault());
    document.addEventListener("dragstart", (event) => event.preventDefault());
    document.addEventListener("selectstart", (event) => event.preventDefault());
    document.addEventListener("wheel", (event) => {
      if (event.ctrlKey) {
        event.preventDefault();
      }
    }, { passive: false });
    document.addEventListener("gesturestart", (event) => event.preventDefault());
    document.addEventListener("pointerdown", touched, true);
    document.addEventListener("keydown", onKeyDown, true);

    on("start-button", start);
    $("attract").addEventListener("click", (event) => {
      if (event.target === $("attract") || !event.target.closest("button")) {
        start();
      }
    });
    on("home-button", showHome);
    on("search-button", showSearch);
    on("pickup-button", showPickup);
    on("pickup-back", showHome);
    $("pickup-keypad").addEventListener("click", onPickupKey);
    on("cart-button", showCart);
    on("lang-button", () => {
      state.lang = state.lang === "en" ? "zh-CN" : "en";
      applyLang();
    });
    on("list-back", () => (state.list.q ? showSearch() : showHome()));
    on("list-more", loadMore);
    on("search-back", showHome);
    $("keyboard").addEventListener("click", onKeyboard);
    on("product-back", () => {
      if (state.productFrom === "list") {
        showScreen("list");
        renderList();
      } else if (state.productFrom === "search") {
        showScreen("search");
      } else {
        showHome();
      }
    });
    on("product-minus", () => {
      state.productQty = Math.max(1, state.productQty - 1);
      renderProduct();
    });
    on("product-plus", () => {
      state.productQty = Math.min(config.max_quantity, state.productQty + 1);
      renderProduct();
    });
    on("product-add", () => {
      if (state.productSku) {
        addToCart(state.productSku, state.productQty);
      }
    });
    on("cart-back", showHome);
    on("cart-checkout", showCheckout);
    on("checkout-back", showCart);
    on("done-button", reset);
    on("idle-continue", touched);

    await loadConfig();
    state.lang = config.lang;
    applyLang();
    showScreen("attract");
    connectLive();
    loadHighlights();
    window.setInterval(rotateHighlight, HIGHLIGHT_MS);
    document.body.dataset.ready = "true";
  }

  init();
})();
