"""Drives a notebook through Hearth's door as a Jupyter client does: HTTP to start a kernel,
a WebSocket to run cells in it.

    notebook_client.py BASE TOKEN [--detach] CODE...

BASE is the notebook's URL (http://HOST/user/NAME), TOKEN a Hearth token. Prints one line per
cell: `OK <output>` or `ERROR <name>: <value>`. With --detach, sends the cells and leaves
without waiting (the kernel keeps running them)."""
import json
import sys
import urllib.request
import uuid

import websocket  # websocket-client: installed with jupyter_server

base, token = sys.argv[1].rstrip("/"), sys.argv[2]
cells = sys.argv[3:]
detach = bool(cells) and cells[0] == "--detach"
if detach:
    cells = cells[1:]
auth = {"Authorization": f"Bearer {token}"}


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        base + path, method=method, data=data,
        headers={**auth, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        text = r.read()
        return json.loads(text) if text else None


kernel = call("POST", "/api/kernels", {"name": "python3"})
ws = websocket.create_connection(
    base.replace("http://", "ws://", 1) + f"/api/kernels/{kernel['id']}/channels",
    header=[f"Authorization: Bearer {token}"], timeout=600)
session = uuid.uuid4().hex
for code in cells:
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": session,
                   "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }))
    if detach:
        continue
    out, error, replied, idle = [], None, False, False
    # The reply (shell) and the output (iopub) travel separately: wait for both ends.
    while not (replied and idle):
        m = json.loads(ws.recv())
        if m.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = m["msg_type"]
        if kind == "stream":
            out.append(m["content"]["text"])
        elif kind in ("execute_result", "display_data"):
            out.append(m["content"]["data"].get("text/plain", ""))
        elif kind == "error":
            error = f"ERROR {m['content']['ename']}: {m['content']['evalue']}"
        elif kind == "execute_reply":
            replied = True
        elif kind == "status" and m["content"]["execution_state"] == "idle":
            idle = True
    print(error or "OK " + " ".join("".join(out).split()), flush=True)
ws.close()
if not detach:
    call("DELETE", f"/api/kernels/{kernel['id']}")
