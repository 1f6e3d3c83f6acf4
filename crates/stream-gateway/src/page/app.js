// The live page's script: follows topics with the browser's own
// EventSource and publishes with fetch. Event data is only ever written
// with textContent, never parsed as HTML.
//
// The page's address may preset the forms: `?topics=a,b&types=message,x`,
// and `lastEventId=0-0` to start from the topics' retained history.
// A token typed in the Token field goes with the stream as
// `?access_token=` (an EventSource cannot send headers) and with publishes
// as `Authorization: Bearer`; the page keeps it nowhere else.
//
// Test hook (read by the browser tests; nothing on the page depends on it):
//   window.esReceived     every event received, in order: {id, type, data}
//                         (the Clear button empties it; capped at 10,000)
//   window.esState        "CONNECTING", "OPEN" or "CLOSED"
//   window.esReconnects   how many times the browser went back to CONNECTING
//                         after an error (it reconnects by itself)
//   window.esLastPublish  the answer to the last publish: {status, body}
"use strict";
(() => {
  const STATES = ["CONNECTING", "OPEN", "CLOSED"];
  const KEPT = 10000;
  const SHOWN = 500;
  const $ = (id) => document.getElementById(id);
  const words = (text) => text.split(/[\s,]+/).filter(Boolean);
  const params = new URLSearchParams(location.search);
  let source = null;
  // The last event id seen, with the topics it belongs to: a new
  // connection to the same topics resumes from it.
  let resume = { topics: null, id: params.get("lastEventId") };
  let following = null;

  window.esReceived = [];
  window.esState = "CLOSED";
  window.esReconnects = 0;
  window.esLastPublish = null;

  function showState(state) {
    window.esState = state;
    $("state").textContent = state;
    $("state").dataset.state = state;
  }

  function received(event) {
    const entry = { id: event.lastEventId, type: event.type, data: event.data };
    window.esReceived.push(entry);
    if (window.esReceived.length > KEPT) window.esReceived.shift();
    $("last-id").textContent = entry.id || "none";
    if (entry.id) resume = { topics: following, id: entry.id };

    const item = document.createElement("li");
    const meta = document.createElement("div");
    meta.className = "meta";
    const type = document.createElement("span");
    type.className = "type";
    type.textContent = entry.type;
    meta.append(type, " · id ", entry.id || "(none)");
    if (entry.type === "reset" || entry.type === "token-expired") {
      item.className = "reset";
      const note = document.createElement("span");
      note.className = "note";
      note.textContent = entry.type === "reset"
        ? " · history did not reach back: events may have been missed"
        : " · the token expired";
      meta.append(note);
    }
    const data = document.createElement("pre");
    data.textContent = entry.data;
    item.append(meta, data);
    const list = $("events");
    list.prepend(item);
    while (list.children.length > SHOWN) list.lastElementChild.remove();
  }

  function connect() {
    disconnect();
    const query = new URLSearchParams();
    const topics = words($("topics").value);
    for (const topic of topics.length ? topics : ["default"]) query.append("topic", topic);
    following = query.toString();
    if (resume.id && (resume.topics === null || resume.topics === following)) {
      query.set("lastEventId", resume.id);
    }
    const token = $("token").value.trim();
    if (token) query.set("access_token", token);
    const es = new EventSource("event-stream?" + query);
    source = es;
    showState("CONNECTING");

    // `open` and `error` are the connection's own events; a MessageEvent
    // under those names would be one published with that type.
    es.onopen = (event) => {
      if (event instanceof MessageEvent) return received(event);
      if (source === es) showState("OPEN");
    };
    es.onerror = (event) => {
      if (event instanceof MessageEvent) return received(event);
      if (source !== es) return;
      if (es.readyState === EventSource.CONNECTING) {
        window.esReconnects += 1;
        $("reconnects").textContent = window.esReconnects;
      }
      showState(STATES[es.readyState]);
    };
    const types = new Set(words($("types").value));
    types.add("reset");
    // The stream's token ran out: the browser would reconnect with the
    // same token and be refused for good, so stop here and say so.
    es.addEventListener("token-expired", (event) => {
      received(event);
      disconnect();
      $("answer").textContent = "the token expired: paste a fresh one and Connect (the stream resumes where it stopped)";
    });
    for (const type of types) {
      if (type !== "open" && type !== "error") es.addEventListener(type, received);
    }
  }

  function disconnect() {
    if (source) source.close();
    source = null;
    showState("CLOSED");
  }

  async function publish() {
    const body = { message: $("message").value };
    if ($("publish-topic").value.trim()) body.topic = $("publish-topic").value.trim();
    if ($("publish-type").value.trim()) body.event = $("publish-type").value.trim();
    const answer = $("answer");
    answer.textContent = "publishing…";
    delete answer.dataset.ok;
    try {
      const headers = { "Content-Type": "application/json" };
      const token = $("token").value.trim();
      if (token) headers.Authorization = "Bearer " + token;
      const response = await fetch("event-stream", {
        method: "POST",
        headers,
        body: JSON.stringify(body),
      });
      const text = await response.text();
      window.esLastPublish = { status: response.status, body: text };
      answer.dataset.ok = response.ok;
      answer.textContent = `${response.status} ${response.statusText}\n${text}`;
    } catch (error) {
      window.esLastPublish = { status: 0, body: String(error) };
      answer.dataset.ok = false;
      answer.textContent = `no answer: ${error}`;
    }
  }

  if (params.get("topics")) $("topics").value = params.get("topics");
  if (params.get("types")) $("types").value = params.get("types");
  $("publish-topic").value = words($("topics").value)[0] || "default";

  $("follow").addEventListener("submit", (event) => { event.preventDefault(); connect(); });
  $("disconnect").addEventListener("click", disconnect);
  $("publish").addEventListener("submit", (event) => { event.preventDefault(); publish(); });
  $("clear").addEventListener("click", () => {
    window.esReceived = [];
    $("events").replaceChildren();
  });
  connect();
})();
