// The locker screen (served by edge_agent/web/locker_screen.py). Customers type a pickup code and learn
// which door opened; staff and couriers sign in to load parcels, take out expired ones and see alarms.
//
// Everything goes through the JSON API: /locker/{bank}/api/collect and /status (locker_api.py) and
// /locker/{bank}/api/staff/... (locker_staff_api.py). The page decides nothing itself: whether a code is
// right, how long a lockout lasts, who may do what, all come from the agent. The staff token lives in a
// variable of this script only (never a cookie or localStorage): a reload or the idle reset forgets it.
//
// Only textContent is ever written from data (no innerHTML), and the CSP allows no inline script.
"use strict";

(function () {
  const STRINGS = {
    en: {
      lang_name: "English",
      title: "Parcel pickup",
      bank: "Locker {bank}",
      prompt: "Type your pickup code",
      open: "Open",
      clear: "Clear",
      delete: "Delete",
      next: "Next",
      sign_in: "Sign in",
      open_door: "Open door",
      done: "Done",
      back: "Back",
      staff: "Staff",
      courier: "Courier",
      staff_number: "Staff number",
      pin: "PIN",
      courier_code: "Courier code",
      load: "Load a parcel",
      retrieval: "Take out parcels",
      alarms: "Alarms",
      sign_out: "Sign out",
      order_number: "Order number",
      scan_hint: "Scan the parcel's barcode, or type the order number.",
      door_hint: "Please close the door when you are done.",
      checking: "One moment…",
      too_short: "Pickup codes have 8 to 12 digits.",
      locked_out: "Too many wrong codes. Please try again in {time}.",
      sign_in_locked: "Too many wrong attempts. Please try again in {time}.",
      try_again: "You can type your code again.",
      no_answer: "The locker is not answering. Please try again, or ask a member of staff.",
      not_set_up: "This locker is not set up. Please ask a member of staff.",
      signed_out: "You were signed out. Please sign in again.",
      wrong_sign_in: "Sign-in failed. Please check and try again.",
      fill_in_staff: "Please type your staff number and PIN.",
      fill_in_courier: "Please type your courier code.",
      enter_order: "Please scan or type an order number.",
      signed_in_as: "Signed in: {actor}",
      nothing_to_retrieve: "No parcels to take out.",
      no_alarms: "No open alarms.",
      since: "since {time}",
      seconds: "{s} s",
      minutes: "{m} min {s} s",
      door_open: "Door {number} is open: {row} row from the top, {column} from the left",
      ordinals: "first,second,third,fourth,fifth,sixth,seventh,eighth,ninth,tenth",
      ordinal_other: "number {n}",
      wrong_code: "This code does not open a door. Please check it and try again.",
      elsewhere: "Your parcel is in locker {bank}. Please type your code on that locker's screen.",
      unavailable: "This door cannot be opened right now. Please ask a member of staff.",
      shelf_flashing: "Shelf {shelf}, slot {slot} is flashing.",
      shelf_hint: "Please go to the flashing label: a member of staff will hand you your order.",
    },
    "zh-CN": {
      lang_name: "中文",
      title: "取件",
      bank: "{bank} 号柜",
      prompt: "请输入取件码",
      open: "开门",
      clear: "清除",
      delete: "删除",
      next: "下一步",
      sign_in: "登录",
      open_door: "开门",
      done: "完成",
      back: "返回",
      staff: "店员",
      courier: "快递员",
      staff_number: "工号",
      pin: "密码",
      courier_code: "投递码",
      load: "存件",
      retrieval: "取出滞留件",
      alarms: "告警",
      sign_out: "退出登录",
      order_number: "订单号",
      scan_hint: "请扫描包裹条码，或输入订单号。",
      door_hint: "用完请关好柜门。",
      checking: "请稍候…",
      too_short: "取件码为 8 到 12 位数字。",
      locked_out: "错误次数过多，请在 {time} 后重试。",
      sign_in_locked: "尝试次数过多，请在 {time} 后重试。",
      try_again: "现在可以重新输入取件码。",
      no_answer: "柜机暂无响应，请重试或联系店员。",
      not_set_up: "此柜组未设置，请联系店员。",
      signed_out: "已退出登录，请重新登录。",
      wrong_sign_in: "登录失败，请检查后重试。",
      fill_in_staff: "请输入工号和密码。",
      fill_in_courier: "请输入投递码。",
      enter_order: "请扫描或输入订单号。",
      signed_in_as: "已登录：{actor}",
      nothing_to_retrieve: "没有需要取出的包裹。",
      no_alarms: "没有未处理的告警。",
      since: "{time} 起",
      seconds: "{s} 秒",
      minutes: "{m} 分 {s} 秒",
      door_open: "{number} 号柜门已打开：从上往下第 {row} 排，从左往右第 {column} 个",
      ordinals: "",
      ordinal_other: "{n}",
      wrong_code: "此取件码无法开门，请核对后重试。",
      elsewhere: "您的包裹在 {bank} 号柜，请到该柜的屏幕上输入取件码。",
      unavailable: "此柜门暂时无法打开，请联系店员。",
      shelf_flashing: "货架 {shelf} 第 {slot} 格的标签正在闪烁。",
      shelf_hint: "请到闪烁的标签处，店员会把订单交给您。",
    },
  };

  const params = new URLSearchParams(window.location.search);
  // The screen's language is chosen per device (?lang=zh-CN in the kiosk's URL) and per customer (the
  // language button); the idle reset goes back to the device's language for the next customer.
  const DEVICE_LANG = Object.prototype.hasOwnProperty.call(STRINGS, params.get("lang") || "")
    ? params.get("lang")
    : "en";
  // Idle reset after 60 s without a touch. `?idle_s=N` overrides it (at least 3 s, below that nobody could
  // type a code): the browser tests use ?idle_s=3 to watch the reset without waiting a minute.
  const MIN_IDLE_S = 3;
  const IDLE_S = parseIdle(params.get("idle_s"));
  // The door message stays this long (or until Done), then the keypad is back for the next customer.
  const DOOR_SHOW_S = 20;
  // Pickup codes are 8 to 12 digits (edge_agent/services/pickup_codes.py). A shorter entry is not sent:
  // it could not be right, and sending it would cost the screen one of its ten attempts.
  const CODE_MIN = 8;
  const CODE_MAX = 12;
  // Opening a door waits for the lock board's answer; past this the agent is taken as not answering.
  const REQUEST_TIMEOUT_MS = 15000;

  const BANK = document.body.dataset.bank || "";
  const API = "/locker/" + encodeURIComponent(BANK) + "/api";

  function parseIdle(raw) {
    const n = Number.parseInt(raw || "", 10);
    if (!Number.isFinite(n)) {
      return 60;
    }
    return Math.max(n, MIN_IDLE_S);
  }

  const $ = (id) => document.getElementById(id);

  // -- state --------------------------------------------------------------------------------------

  const state = {
    lang: DEVICE_LANG,
    screen: "code",
    busy: false,
    signinKind: "staff",
    token: null, // the staff session token: memory only
    role: null,
    actor: null,
    staffIdleS: null,
    doorReturn: "code", // where Done goes: the keypad, or the staff menu
  };

  // A typed value and how it shows: digits in groups of four, or masked (PIN, courier code).
  function makeField(id, options) {
    return {
      el: $(id),
      value: "",
      max: options.max,
      allowed: options.allowed,
      masked: Boolean(options.masked),
      slots: options.slots || 0, // faint placeholders for the digits still to type
    };
  }

  const DIGIT = /^[0-9]$/;
  // Order numbers as a barcode scanner sends them: printable ASCII, no spaces.
  const ORDER_CHAR = /^[\x21-\x7e]$/;

  const fields = {
    code: makeField("field-code", { max: CODE_MAX, allowed: DIGIT, slots: CODE_MIN }),
    staffNumber: makeField("field-staff-number", { max: 16, allowed: DIGIT }),
    pin: makeField("field-pin", { max: 12, allowed: DIGIT, masked: true }),
    courierCode: makeField("field-courier-code", { max: 16, allowed: DIGIT, masked: true }),
    order: makeField("field-order", { max: 64, allowed: ORDER_CHAR }),
  };
  let activeField = fields.code;

  function t(key, vars) {
    const table = STRINGS[state.lang] || STRINGS.en;
    let text = Object.prototype.hasOwnProperty.call(table, key) ? table[key] : STRINGS.en[key] || key;
    for (const [name, value] of Object.entries(vars || {})) {
      text = text.split("{" + name + "}").join(String(value));
    }
    return text;
  }

  function duration(seconds) {
    const s = Math.max(0, Math.ceil(seconds));
    if (s < 60) {
      return t("seconds", { s: s });
    }
    return t("minutes", { m: Math.floor(s / 60), s: s % 60 });
  }

  // -- rendering ----------------------------------------------------------------------------------

  function renderField(field) {
    const el = field.el;
    el.textContent = "";
    if (field.masked) {
      el.textContent = "•".repeat(field.value.length);
      el.dataset.length = String(field.value.length);
    } else {
      el.dataset.value = field.value;
      if (field.allowed === DIGIT) {
        // Digits in groups of four ("1234 5678"), easier to compare with the code on a phone.
        const slots = Math.max(field.slots, field.value.length);
        const padded = field.value.padEnd(slots, "·");
        for (let i = 0; i < padded.length; i += 4) {
          const group = document.createElement("span");
          group.className = "group";
          for (const ch of padded.slice(i, i + 4)) {
            const digit = document.createElement("span");
            digit.textContent = ch;
            if (ch === "·") {
              digit.className = "empty";
            }
            group.appendChild(digit);
          }
          el.appendChild(group);
        }
      } else {
        el.textContent = field.value;
      }
    }
    for (const f of Object.values(fields)) {
      f.el.classList.toggle("active", f === activeField && state.screen !== "code");
    }
  }

  function setMessage(id, text, kind) {
    const el = $(id);
    el.textContent = text || "";
    el.className = "message" + (kind && text ? " " + kind : "");
    el.dataset.kind = text ? kind || "" : "";
  }

  function applyLang() {
    document.documentElement.lang = state.lang;
    for (const el of document.querySelectorAll("[data-i18n]")) {
      el.textContent = t(el.dataset.i18n);
    }
    $("bank-name").textContent = t("bank", { bank: BANK });
    const other = state.lang === "en" ? "zh-CN" : "en";
    $("lang-button").textContent = STRINGS[other].lang_name;
    $("lang-button").lang = other;
    $("menu-who").textContent = state.actor ? t("signed_in_as", { actor: state.actor }) : "";
    updateEnterKey();
    for (const countdown of countdowns.values()) {
      countdown.tick();
    }
  }

  const SCREENS = {
    code: { keypad: true, enter: "open", field: "code" },
    door: { keypad: false },
    signin: { keypad: true, enter: "sign_in", field: "staffNumber" },
    menu: { keypad: false },
    load: { keypad: true, enter: "open_door", field: "order" },
    retrieval: { keypad: false },
    alarms: { keypad: false },
  };

  function showScreen(name) {
    state.screen = name;
    for (const key of Object.keys(SCREENS)) {
      $("screen-" + key).hidden = key !== name;
    }
    const screen = SCREENS[name];
    $("keypad").hidden = !screen.keypad;
    $("app").classList.toggle("no-keypad", !screen.keypad);
    // The Staff button sits on the customer keypad only; once signed in, the menu has Sign out.
    $("staff-button").hidden = name !== "code" || state.token !== null;
    if (screen.field) {
      activeField = fields[screen.field];
      if (name === "signin" && state.signinKind === "courier") {
        activeField = fields.courierCode;
      }
    }
    for (const f of Object.values(fields)) {
      renderField(f);
    }
    updateEnterKey();
  }

  function updateEnterKey() {
    const screen = SCREENS[state.screen];
    let label = screen.enter || "open";
    if (state.screen === "signin" && state.signinKind === "staff" && activeField === fields.staffNumber) {
      label = "next";
    }
    $("key-enter").textContent = t(label);
    $("key-enter").disabled = state.busy;
  }

  function setBusy(busy) {
    state.busy = busy;
    updateEnterKey();
  }

  // -- countdowns (lockouts) ----------------------------------------------------------------------

  const countdowns = new Map();

  // Shows `key` ("... try again in {time}") in message `id`, counting down to zero from `seconds`, then
  // `done` runs. The deadline is on the monotonic clock so a wall-clock change does not stretch it.
  function startCountdown(id, key, seconds, done) {
    stopCountdown(id);
    const until = performance.now() + seconds * 1000;
    const countdown = {
      tick() {
        const left = (until - performance.now()) / 1000;
        if (left <= 0) {
          stopCountdown(id);
          setMessage(id, "", "");
          if (done) {
            done();
          }
          return;
        }
        setMessage(id, t(key, { time: duration(left) }), "lockout");
        $(id).dataset.secondsLeft = String(Math.ceil(left));
      },
      timer: window.setInterval(() => countdown.tick(), 250),
    };
    countdowns.set(id, countdown);
    countdown.tick();
  }

  function stopCountdown(id) {
    const countdown = countdowns.get(id);
    if (countdown) {
      window.clearInterval(countdown.timer);
      countdowns.delete(id);
    }
    delete $(id).dataset.secondsLeft;
  }

  function lockedOut(id) {
    return countdowns.has(id);
  }

  // -- talking to the agent -----------------------------------------------------------------------

  // One request; resolves to {status, body} (body null when not JSON), rejects when the agent did not
  // answer at all (network down, agent restarting, timeout).
  async function call(method, path, body) {
    const controller = new AbortController();
    const timer = window.setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    const headers = { Accept: "application/json" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
    }
    if (state.token !== null && path.startsWith("/staff/")) {
      headers.Authorization = "Bearer " + state.token;
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

  function serverMessage(answer, fallbackKey) {
    return answer.body && typeof answer.body.message === "string" && answer.body.message
      ? answer.body.message
      : t(fallbackKey);
  }

  // -- customer: the code -------------------------------------------------------------------------

  async function refreshStatus() {
    try {
      const answer = await call("GET", "/status");
      if (answer.status === 200 && answer.body && answer.body.locked_out && answer.body.seconds_left > 0) {
        showLockout(answer.body.seconds_left);
      } else if (answer.status === 404) {
        setMessage("code-message", t("not_set_up"), "error");
      }
    } catch (_error) {
      // Nothing to show yet: the first code typed tells the customer if the agent is not answering.
    }
  }

  function showLockout(seconds) {
    startCountdown("code-message", "locked_out", seconds, () => setMessage("code-message", t("try_again"), "info"));
  }

  async function submitCode() {
    const code = fields.code.value;
    if (code.length === 0) {
      return;
    }
    if (code.length < CODE_MIN) {
      if (!lockedOut("code-message")) {
        setMessage("code-message", t("too_short"), "error");
      }
      return;
    }
    setBusy(true);
    if (!lockedOut("code-message")) {
      setMessage("code-message", t("checking"), "info");
    }
    let answer;
    try {
      answer = await call("POST", "/collect", { code: code });
    } catch (_error) {
      setBusy(false);
      // The code stays typed: the customer can tap Open again once the agent answers.
      setMessage("code-message", t("no_answer"), "error");
      return;
    }
    setBusy(false);
    const status = answer.body ? answer.body.status : null;
    clearField(fields.code);
    if (answer.status === 200 && status === "ok") {
      stopCountdown("code-message");
      setMessage("code-message", "", "");
      showDoor(doorText(answer.body), "code");
    } else if (answer.status === 200 && status === "shelf" && answer.body.slot) {
      // An order on a pickup shelf: no door opens, its slot's label flashes (the same code check).
      stopCountdown("code-message");
      setMessage("code-message", "", "");
      const slot = answer.body.slot;
      showDoor(t("shelf_flashing", { shelf: slot.shelf_name, slot: slot.position }), "code", "shelf_hint");
    } else if (answer.status === 429) {
      const seconds = Number(answer.body && answer.body.seconds_left) || 30;
      showLockout(seconds);
    } else if (answer.status === 200 && status === "wrong") {
      // Always the same words for any wrong code: nothing here tells whether a code exists.
      setMessage("code-message", t("wrong_code"), "error");
      // That failure may have started a lockout: say so now rather than at the next code.
      refreshStatus();
    } else if (answer.status === 409 && status === "elsewhere" && answer.body.bank) {
      setMessage("code-message", t("elsewhere", { bank: answer.body.bank }), "warn");
    } else if (answer.status === 503) {
      setMessage("code-message", t("unavailable"), "warn");
    } else if (answer.status === 409) {
      setMessage("code-message", serverMessage(answer, "no_answer"), "warn");
    } else if (answer.status === 404) {
      setMessage("code-message", t("not_set_up"), "error");
    } else {
      setMessage("code-message", t("no_answer"), "error");
    }
  }

  // -- doors ----------------------------------------------------------------------------------------

  let doorTimer = null;

  function ordinal(n) {
    const words = t("ordinals") ? t("ordinals").split(",") : [];
    return n >= 1 && n <= words.length ? words[n - 1] : t("ordinal_other", { n: n });
  }

  // The agent says which door opened as data (number, row, column), so the message is in the screen's
  // language; its English `message` is the fallback for an answer without it.
  function doorText(body) {
    const door = body && body.door;
    if (door && door.number !== undefined && Number(door.row) >= 1 && Number(door.column) >= 1) {
      const row = ordinal(Number(door.row));
      const column = ordinal(Number(door.column));
      return t("door_open", { number: door.number, row: row, column: column });
    }
    return body && typeof body.message === "string" ? body.message : "";
  }

  function showDoor(message, returnTo, hint) {
    state.doorReturn = returnTo;
    $("door-message").textContent = message;
    // The hint under the message: close the door, or (a shelf order) go to the flashing label.
    $("door-hint").dataset.i18n = hint || "door_hint";
    $("door-hint").textContent = t(hint || "door_hint");
    showScreen("door");
    window.clearTimeout(doorTimer);
    doorTimer = window.setTimeout(leaveDoor, DOOR_SHOW_S * 1000);
  }

  function leaveDoor() {
    window.clearTimeout(doorTimer);
    doorTimer = null;
    $("door-message").textContent = "";
    if (state.doorReturn === "menu" && state.token === null) {
      state.doorReturn = "code";
    }
    showScreen(state.doorReturn);
  }

  // -- staff and couriers ---------------------------------------------------------------------------

  function selectSigninKind(kind) {
    state.signinKind = kind;
    $("tab-staff").classList.toggle("selected", kind === "staff");
    $("tab-courier").classList.toggle("selected", kind === "courier");
    $("tab-staff").setAttribute("aria-selected", String(kind === "staff"));
    $("tab-courier").setAttribute("aria-selected", String(kind === "courier"));
    $("signin-staff").hidden = kind !== "staff";
    $("signin-courier").hidden = kind !== "courier";
    clearField(fields.staffNumber);
    clearField(fields.pin);
    clearField(fields.courierCode);
    activeField = kind === "staff" ? fields.staffNumber : fields.courierCode;
    for (const f of Object.values(fields)) {
      renderField(f);
    }
    updateEnterKey();
  }

  function openSignin(message) {
    state.token = null;
    state.role = null;
    state.actor = null;
    state.staffIdleS = null;
    showScreen("signin");
    selectSigninKind("staff");
    if (!lockedOut("signin-message")) {
      setMessage("signin-message", message || "", message ? "warn" : "");
    }
  }

  async function submitSignin() {
    let body;
    if (state.signinKind === "staff") {
      if (activeField === fields.staffNumber && fields.staffNumber.value) {
        activeField = fields.pin;
        renderField(fields.pin);
        updateEnterKey();
        if (!fields.pin.value) {
          return;
        }
      }
      if (!fields.staffNumber.value || !fields.pin.value) {
        setMessage("signin-message", t("fill_in_staff"), "error");
        return;
      }
      body = { kind: "staff", staff_number: fields.staffNumber.value, pin: fields.pin.value };
    } else {
      if (!fields.courierCode.value) {
        setMessage("signin-message", t("fill_in_courier"), "error");
        return;
      }
      body = { kind: "courier", code: fields.courierCode.value };
    }
    setBusy(true);
    let answer;
    try {
      answer = await call("POST", "/staff/sign-in", body);
    } catch (_error) {
      setBusy(false);
      setMessage("signin-message", t("no_answer"), "error");
      return;
    }
    setBusy(false);
    // Whatever the answer, the secret is not kept on screen.
    clearField(fields.pin);
    clearField(fields.courierCode);
    if (answer.status === 200 && answer.body && typeof answer.body.token === "string") {
      clearField(fields.staffNumber);
      stopCountdown("signin-message");
      state.token = answer.body.token;
      state.role = answer.body.role === "staff" ? "staff" : "courier";
      state.actor = String(answer.body.actor || "");
      state.staffIdleS = Number(answer.body.idle_s) || null;
      touched();
      showMenu("");
    } else if (answer.status === 429) {
      const seconds = Number(answer.body && answer.body.seconds_left) || 30;
      startCountdown("signin-message", "sign_in_locked", seconds, null);
    } else if (answer.status === 401) {
      activeField = state.signinKind === "staff" ? fields.pin : fields.courierCode;
      setMessage("signin-message", serverMessage(answer, "wrong_sign_in"), "error");
      for (const f of Object.values(fields)) {
        renderField(f);
      }
      updateEnterKey();
    } else {
      setMessage("signin-message", t("no_answer"), "error");
    }
  }

  function showMenu(message) {
    showScreen("menu");
    $("menu-who").textContent = t("signed_in_as", { actor: state.actor });
    // Couriers load; taking parcels out and alarms are for store staff (the API refuses them anyway).
    $("menu-retrieval").hidden = state.role !== "staff";
    $("menu-alarms").hidden = state.role !== "staff";
    setMessage("menu-message", message, message ? "error" : "");
  }

  // A staff call: a 401 {"status": "signed_out"} (session ended, idle on the agent's side, or revoked)
  // sends the screen back to sign-in. Resolves to the answer, or null when it was handled here.
  async function staffCall(method, path, body, messageId) {
    let answer;
    try {
      answer = await call(method, path, body);
    } catch (_error) {
      setMessage(messageId, t("no_answer"), "error");
      return null;
    }
    if (answer.status === 401) {
      openSignin(t("signed_out"));
      return null;
    }
    return answer;
  }

  async function submitLoad() {
    const orderId = fields.order.value;
    if (!orderId) {
      setMessage("load-message", t("enter_order"), "error");
      return;
    }
    setBusy(true);
    setMessage("load-message", t("checking"), "info");
    const answer = await staffCall("POST", "/staff/load", { order_id: orderId }, "load-message");
    setBusy(false);
    if (answer === null) {
      return;
    }
    if (answer.status === 200 && answer.body && answer.body.status === "ok") {
      clearField(fields.order);
      setMessage("load-message", "", "");
      showDoor(doorText(answer.body), "menu");
    } else {
      // The order stays typed: a scanning slip is easier to fix than to rescan.
      setMessage("load-message", serverMessage(answer, "no_answer"), "error");
    }
  }

  async function loadTasks(messageId) {
    const answer = await staffCall("GET", "/staff/tasks", undefined, messageId);
    if (answer === null) {
      return null;
    }
    if (answer.status !== 200 || !answer.body) {
      setMessage(messageId, serverMessage(answer, "no_answer"), "error");
      return null;
    }
    return answer.body;
  }

  async function showRetrievals(message) {
    showScreen("retrieval");
    const list = $("retrieval-list");
    list.textContent = "";
    setMessage("retrieval-message", message || t("checking"), message ? "error" : "info");
    const tasks = await loadTasks("retrieval-message");
    if (tasks === null || state.screen !== "retrieval") {
      return;
    }
    const retrievals = Array.isArray(tasks.retrievals) ? tasks.retrievals : [];
    setMessage("retrieval-message", message || (retrievals.length ? "" : t("nothing_to_retrieve")), message ? "error" : "info");
    for (const item of retrievals) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "retrieval";
      button.dataset.orderId = String(item.order_id);
      button.textContent = String(item.compartment) + " · " + String(item.order_id);
      const detail = document.createElement("span");
      detail.className = "detail";
      detail.textContent = String(item.message || "");
      button.appendChild(detail);
      button.addEventListener("click", () => retrieve(String(item.order_id)));
      li.appendChild(button);
      list.appendChild(li);
    }
  }

  async function retrieve(orderId) {
    if (state.busy) {
      return;
    }
    setBusy(true);
    const answer = await staffCall("POST", "/staff/retrieve", { order_id: orderId }, "retrieval-message");
    setBusy(false);
    if (answer === null) {
      return;
    }
    if (answer.status === 200 && answer.body && answer.body.status === "ok") {
      showDoor(doorText(answer.body), "menu");
    } else {
      await showRetrievals(serverMessage(answer, "no_answer"));
    }
  }

  async function showAlarms() {
    showScreen("alarms");
    const list = $("alarm-list");
    list.textContent = "";
    setMessage("alarms-message", t("checking"), "info");
    const tasks = await loadTasks("alarms-message");
    if (tasks === null || state.screen !== "alarms") {
      return;
    }
    const alarms = Array.isArray(tasks.alarms) ? tasks.alarms : [];
    setMessage("alarms-message", alarms.length ? "" : t("no_alarms"), "info");
    for (const alarm of alarms) {
      const li = document.createElement("li");
      li.className = "item alarm";
      li.textContent = String(alarm.message || alarm.kind);
      if (typeof alarm.since_ms === "number") {
        const detail = document.createElement("span");
        detail.className = "detail";
        const time = new Date(alarm.since_ms).toLocaleString(state.lang, { dateStyle: "short", timeStyle: "short" });
        detail.textContent = t("since", { time: time });
        li.appendChild(detail);
      }
      list.appendChild(li);
    }
  }

  // Ends the staff session on the agent too; the screen forgets the token first, whatever the answer.
  function signOut() {
    const token = state.token;
    state.token = null;
    state.role = null;
    state.actor = null;
    state.staffIdleS = null;
    if (token !== null) {
      fetch(API + "/staff/sign-out", {
        method: "POST",
        headers: { Authorization: "Bearer " + token },
        cache: "no-store",
        credentials: "omit",
        keepalive: true,
      }).catch(() => undefined);
    }
  }

  // -- input ----------------------------------------------------------------------------------------

  function clearField(field) {
    field.value = "";
    renderField(field);
  }

  function typeChar(ch) {
    const field = activeField;
    if (!SCREENS[state.screen].keypad || !field.allowed.test(ch) || field.value.length >= field.max) {
      return;
    }
    field.value += ch;
    renderField(field);
  }

  function deleteChar() {
    if (!SCREENS[state.screen].keypad) {
      return;
    }
    activeField.value = activeField.value.slice(0, -1);
    renderField(activeField);
  }

  function clearActive() {
    if (SCREENS[state.screen].keypad) {
      clearField(activeField);
    }
  }

  function submit() {
    if (state.busy) {
      return;
    }
    if (state.screen === "code") {
      submitCode();
    } else if (state.screen === "signin") {
      submitSignin();
    } else if (state.screen === "load") {
      submitLoad();
    } else if (state.screen === "door") {
      leaveDoor();
    }
  }

  function onKeypad(event) {
    const button = event.target.closest("button[data-key]");
    if (!button || button.disabled) {
      return;
    }
    const key = button.dataset.key;
    if (key === "enter") {
      submit();
    } else if (key === "clear") {
      clearActive();
    } else if (key === "delete") {
      deleteChar();
    } else {
      typeChar(key);
    }
  }

  // A USB keypad or a keyboard-wedge barcode scanner types here: digits (and, for order numbers, any
  // printable character), Backspace, Escape, Enter. A scanner sends its characters fast and then Enter,
  // so it needs nothing special: the field need not even have focus.
  function onKeyDown(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) {
      // Ctrl + / Ctrl - / Ctrl 0 would zoom the kiosk; nothing else here needs a modifier.
      event.preventDefault();
      return;
    }
    const key = event.key;
    if (key === "Enter") {
      event.preventDefault(); // not also a click on whichever button has focus
      submit();
    } else if (key === "Backspace") {
      event.preventDefault();
      deleteChar();
    } else if (key === "Escape" || key === "Delete") {
      event.preventDefault();
      clearActive();
    } else if (key === "Tab" && state.screen === "signin" && state.signinKind === "staff") {
      event.preventDefault();
      activeField = activeField === fields.staffNumber ? fields.pin : fields.staffNumber;
      renderField(activeField);
      updateEnterKey();
    } else if (key.length === 1) {
      event.preventDefault();
      typeChar(key);
    }
  }

  // -- idle reset -----------------------------------------------------------------------------------

  let idleTimer = null;

  function idleSeconds() {
    // A staff session may be shorter on the agent's side: reset before the agent signs us out.
    return state.staffIdleS ? Math.max(MIN_IDLE_S, Math.min(IDLE_S, state.staffIdleS)) : IDLE_S;
  }

  function touched() {
    window.clearTimeout(idleTimer);
    idleTimer = window.setTimeout(idleReset, idleSeconds() * 1000);
  }

  // Nobody touched the screen for a while: the next person finds a clean keypad, whatever was left.
  function idleReset() {
    idleTimer = null;
    signOut();
    window.clearTimeout(doorTimer);
    doorTimer = null;
    $("door-message").textContent = "";
    for (const f of Object.values(fields)) {
      f.value = "";
    }
    for (const id of ["code-message", "signin-message", "menu-message", "load-message", "retrieval-message", "alarms-message"]) {
      stopCountdown(id);
      setMessage(id, "", "");
    }
    $("retrieval-list").textContent = "";
    $("alarm-list").textContent = "";
    state.lang = DEVICE_LANG;
    state.busy = false;
    applyLang();
    showScreen("code");
    // A lockout outlives the reset: it is the agent's, for this screen; show it again if it still runs.
    refreshStatus();
  }

  // -- wiring ---------------------------------------------------------------------------------------

  function on(id, handler) {
    $(id).addEventListener("click", handler);
  }

  function init() {
    // Kiosk hygiene: no context menu (long press), no drag of text or images, no ctrl+wheel zoom.
    document.addEventListener("contextmenu", (event) => event.preventDefault());
    document.addEventListener("dragstart", (event) => event.preventDefault());
    document.addEventListener("selectstart", (event) => event.preventDefault());
    document.addEventListener("wheel", (event) => {
      if (event.ctrlKey) {
        event.preventDefault();
      }
    }, { passive: false });
    document.addEventListener("pointerdown", touched, true);
    document.addEventListener("keydown", touched, true);
    document.addEventListener("keydown", onKeyDown);

    $("keypad").addEventListener("click", onKeypad);
    on("door-done", leaveDoor);
    on("lang-button", () => {
      state.lang = state.lang === "en" ? "zh-CN" : "en";
      applyLang();
    });
    on("staff-button", () => openSignin(""));
    on("tab-staff", () => selectSigninKind("staff"));
    on("tab-courier", () => selectSigninKind("courier"));
    on("field-staff-number", () => {
      activeField = fields.staffNumber;
      renderField(activeField);
      updateEnterKey();
    });
    on("field-pin", () => {
      activeField = fields.pin;
      renderField(activeField);
      updateEnterKey();
    });
    on("signin-back", () => {
      stopCountdown("signin-message");
      setMessage("signin-message", "", "");
      showScreen("code");
    });
    on("menu-load", () => {
      clearField(fields.order);
      setMessage("load-message", "", "");
      showScreen("load");
    });
    on("menu-retrieval", () => showRetrievals(""));
    on("menu-alarms", () => showAlarms());
    on("menu-sign-out", () => {
      signOut();
      showScreen("code");
    });
    for (const id of ["load-back", "retrieval-back", "alarms-back"]) {
      on(id, () => showMenu(""));
    }

    applyLang();
    selectSigninKind("staff");
    showScreen("code");
    refreshStatus();
    document.body.dataset.ready = "true";
  }

  init();
})();
