// The simulator page: pick a roster member, chat as them, tap card buttons.
// Talks only to /sim/api/ on the same server; every text is set as text, never as HTML.
"use strict";

(function () {
  const POLL_WAIT = 20; // seconds the server may hold a long poll
  const RETRY_MS = 2000;
  const RELEASE_MS = 5000;

  const T = {
    noMembers: "名单是空的：先运行 salesbot demo 或 salesbot team import。",
    pickHint: "点一位成员，以他的身份聊天。",
    loadFailed: "读取名单失败，请刷新页面重试。",
    pollFailed: "与机器人的连接中断，正在重连…",
    sendFailed: "发送失败：",
    clickFailed: "点击没有送达：",
    working: "处理中…",
    updated: "卡片已更新",
    chatting: "正在以 {name}（{role}）的身份对话",
  };

  const $ = (id) => document.getElementById(id);
  const state = {
    member: null, // {id, name, role_name, ...}
    last: 0, // the newest outbox id shown
    cards: new Map(), // card id -> card element
    generation: 0, // bumps when the member changes, ending the old poll loop
    controller: null,
    timezone: undefined, // the team's, from the server
  };

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  // Times read as the team reads them: in its timezone, not the visitor's.
  function timeOf(iso) {
    if (!iso) return "";
    const at = new Date(iso);
    if (Number.isNaN(at.getTime())) return "";
    const options = { hour: "2-digit", minute: "2-digit", hour12: false };
    try {
      return at.toLocaleTimeString("zh-CN", { ...options, timeZone: state.timezone });
    } catch (error) {
      return at.toLocaleTimeString("zh-CN", options);
    }
  }

  async function api(path, options) {
    const response = await fetch(path, options);
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.errors && body.errors[0] && body.errors[0].message;
      throw new Error(message || "HTTP " + response.status);
    }
    return body;
  }

  function post(path, payload) {
    return api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payload),
    });
  }

  // ---- the roster --------------------------------------------------------------------

  async function loadMembers() {
    let data;
    try {
      data = await api("/sim/api/members");
    } catch (error) {
      $("roster-hint").textContent = T.loadFailed;
      return;
    }
    const list = $("members");
    list.replaceChildren();
    $("roster-hint").textContent = data.members.length ? T.pickHint : T.noMembers;
    for (const member of data.members) {
      list.append(memberItem(member));
    }
    const wanted = new URLSearchParams(location.hash.slice(1)).get("m");
    const found = data.members.find((m) => String(m.id) === wanted);
    if (found) select(found);
  }

  function memberItem(member) {
    const item = el("li");
    const button = el("button");
    button.type = "button";
    button.dataset.memberId = member.id;
    button.setAttribute("aria-pressed", "false");
    button.append(el("span", "avatar " + member.role, member.name.slice(0, 1)));
    const words = el("span");
    const name = el("span", "member-name", member.name);
    name.append(el("span", "badge", member.role_name));
    if (member.status !== "active") name.append(el("span", "badge", member.status_name));
    const meta = [member.team, member.industries.join("、")].filter(Boolean).join(" · ");
    words.append(name, el("span", "member-meta", meta));
    button.append(words);
    button.addEventListener("click", () => select(member));
    item.append(button);
    return item;
  }

  function select(member) {
    state.member = member;
    state.last = 0;
    state.cards.clear();
    state.generation += 1;
    if (state.controller) state.controller.abort();
    history.replaceState(null, "", "#m=" + member.id);
    for (const button of document.querySelectorAll(".members button")) {
      button.setAttribute("aria-pressed", String(button.dataset.memberId === String(member.id)));
    }
    $("who").textContent = T.chatting
      .replace("{name}", member.name)
      .replace("{role}", member.role_name);
    $("messages").replaceChildren();
    setComposer(true);
    $("text").focus();
    poll(state.generation);
  }

  function setComposer(enabled) {
    $("text").disabled = !enabled;
    $("send").disabled = !enabled;
    for (const chip of document.querySelectorAll("#chips button")) chip.disabled = !enabled;
  }

  // ---- messages ----------------------------------------------------------------------

  async function poll(generation) {
    let wait = 0; // the first read returns at once with the history
    while (generation === state.generation) {
      const controller = new AbortController();
      state.controller = controller;
      const query = new URLSearchParams({
        member: state.member.id, after: state.last, wait: wait,
      });
      try {
        const data = await api("/sim/api/messages?" + query, { signal: controller.signal });
        if (generation !== state.generation) return;
        state.timezone = data.timezone || state.timezone;
        for (const message of data.messages) show(message, wait > 0);
        state.last = data.last;
        wait = POLL_WAIT;
      } catch (error) {
        if (generation !== state.generation) return;
        note(T.pollFailed, true);
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      }
    }
  }

  // `live` is false for the history read when a member is picked.
  function show(message, live) {
    if (message.card) {
      const old = state.cards.get(message.card.id);
      if (old) {
        old.replaceWith(cardElement(message.card));
        if (live && message.kind === "card_update") note(T.updated);
        return;
      }
      if (message.kind === "card_update") return; // a card this page never showed
      append(botRow(cardElement(message.card), message.sent_at));
      return;
    }
    append(botRow(el("div", "bubble", message.text), message.sent_at));
  }

  function botRow(content, sentAt) {
    const row = el("div", "row bot");
    const time = timeOf(sentAt);
    if (time) row.append(el("span", "time", time));
    row.append(content);
    return row;
  }

  function cardElement(card) {
    const box = el("div", "card" + (card.buttons.length ? "" : " closed"));
    box.dataset.cardId = card.id;
    box.append(el("div", "card-title", card.title));
    if (card.description) box.append(el("div", "card-desc", card.description));
    if (card.fields.length) {
      const fields = el("dl", "card-fields");
      for (const field of card.fields) {
        fields.append(el("dt", null, field.label), el("dd", null, field.value));
      }
      box.append(fields);
    }
    if (card.status) box.append(el("div", "card-status", "✔ " + card.status));
    if (card.buttons.length) {
      const buttons = el("div", "card-buttons");
      for (const spec of card.buttons) {
        const button = el("button", spec.style, spec.label);
        button.type = "button";
        button.addEventListener("click", () => clickButton(card, spec, buttons));
        buttons.append(button);
      }
      box.append(buttons);
    }
    state.cards.set(card.id, box);
    return box;
  }

  function append(node) {
    const box = $("messages");
    const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    box.append(node);
    if (nearBottom || node.classList.contains("me")) box.scrollTop = box.scrollHeight;
  }

  function note(text, isError) {
    append(el("p", "note" + (isError ? " error" : ""), text));
  }

  // ---- what the visitor does ---------------------------------------------------------

  async function say(text) {
    text = text.trim();
    if (!text || !state.member) return;
    const row = el("div", "row me");
    row.append(el("div", "bubble", text));
    append(row);
    try {
      await post("/sim/api/say", { member: state.member.id, text: text });
    } catch (error) {
      note(T.sendFailed + error.message, true);
    }
  }

  async function clickButton(card, spec, buttons) {
    for (const button of buttons.querySelectorAll("button")) button.disabled = true;
    const working = el("div", "card-desc", T.working);
    buttons.after(working);
    try {
      await post("/sim/api/click", {
        member: state.member.id, key: spec.key, card_ref: card.ref,
      });
    } catch (error) {
      release();
      note(T.clickFailed + error.message, true);
      return;
    }
    // The card is replaced when its update arrives; a click the bot refuses (a card
    // already handled elsewhere) changes no card, so the buttons come back.
    setTimeout(() => {
      if (buttons.isConnected) release();
    }, RELEASE_MS);

    function release() {
      working.remove();
      for (const button of buttons.querySelectorAll("button")) button.disabled = false;
    }
  }

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("text");
    const text = input.value;
    input.value = "";
    say(text);
  });
  for (const chip of document.querySelectorAll("#chips button")) {
    chip.disabled = true;
    chip.addEventListener("click", () => say(chip.dataset.text));
  }

  loadMembers();
})();
