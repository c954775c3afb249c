// Live WebSocket counter and echo, proving that upgrades work end to end. Connects to /ws on
// the same host (wss:// when the page came over https), reconnects with backoff.
(() => {
  const $ = (id) => document.getElementById(id);
  const counter = $("counter"), status = $("ws-status"), log = $("echo-log");
  const input = $("echo-input"), rtt = $("echo-rtt");
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  $("ws-url").textContent = url;
  let ws = null, retry = 500;
  const sent = [];

  const setStatus = (text, cls) => { status.textContent = text; status.className = "status " + cls; };
  const addLog = (text, cls) => {
    const li = document.createElement("li");
    li.textContent = text;
    li.className = cls;
    log.prepend(li);
    while (log.children.length > 20) log.lastChild.remove();
  };

  function connect() {
    setStatus("connecting…", "wait");
    ws = new WebSocket(url);
    ws.onopen = () => { retry = 500; setStatus("connected", "ok"); };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (typeof msg.counter === "number") {
        counter.textContent = msg.counter;
        counter.classList.remove("tick");
        void counter.offsetWidth;
        counter.classList.add("tick");
      }
      if (typeof msg.echo === "string") {
        const t0 = sent.shift();
        if (t0 !== undefined) rtt.textContent = "last round trip " + Math.round(performance.now() - t0) + " ms";
        addLog("⇠ " + msg.echo, "in");
      }
    };
    ws.onclose = () => {
      sent.length = 0;
      setStatus("disconnected, retrying in " + (retry / 1000) + " s", "bad");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
  }

  $("echo-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value;
    if (!text || !ws || ws.readyState !== WebSocket.OPEN) return;
    sent.push(performance.now());
    ws.send(text);
    addLog("⇢ " + text, "out");
    input.value = "";
  });
  connect();
})();
