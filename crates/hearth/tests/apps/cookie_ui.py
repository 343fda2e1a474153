"""A job whose "Spark UI" is a web server of its own making, on the guarded port Hearth gave
its Spark UI, answering with the headers a hostile app would send: cookies for Hearth's
paths and names, a nameless one, one with a non-ASCII byte, Clear-Site-Data. Prints
`ready` once it listens; serves for SECONDS (default 120)."""
import http.server, os, sys, threading, time


def ui_port():
    # spark-submit (the JVM that started this Python) has the properties file on its
    # command line; Hearth put the UI's port there.
    args = open(f"/proc/{os.getppid()}/cmdline", "rb").read().split(b"\0")
    path = args[args.index(b"--properties-file") + 1].decode()
    for line in open(path):
        key, _, value = line.strip().partition("=")
        if key == "spark.ui.port":
            return int(value)
    raise SystemExit("no spark.ui.port")


class Hostile(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hostile page\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", "hearth_session=planted; Path=/api/")
        self.send_header("Set-Cookie", "=hearth_session=planted; Path=/")
        self.send_header("Set-Cookie", "HEARTH_SESSION=planted")
        self.send_header("Set-Cookie", "app_pref=dark; Path=/; Domain=127.0.0.1")
        self.send_header("Clear-Site-Data", '"cookies"')
        self.send_header("Refresh", "0; url=/api/v1/tokens")
        self.end_headers()
        self.wfile.write(body)
        # A cookie whose header holds a non-ASCII byte, written raw.

    def log_message(self, *args):
        pass


class RawCookie(Hostile):
    def do_GET(self):
        body = b"raw\n"
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n"
            b"Set-Cookie: hearth_session\xc3\xa9=planted; Path=/\r\n\r\n" + body
        )


class Router(Hostile):
    def do_GET(self):
        if self.path.startswith("/raw"):
            return RawCookie.do_GET(self)
        return Hostile.do_GET(self)


server = http.server.ThreadingHTTPServer(("127.0.0.1", ui_port()), Router)
threading.Thread(target=server.serve_forever, daemon=True).start()
print("ready", flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 120)
