"""Another user's job, attacking: tries a TCP connection to each HOST:PORT given (saying
OPEN or CLOSED), sends a UDP datagram to each, and counts the sockets of uid VICTIM it can
see in /proc/net. Usage: netprobe.py VICTIM_UID HOST:PORT..."""
import socket, sys

victim = sys.argv[1]
for target in sys.argv[2:]:
    host, port = target.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(1.0)
    try:
        s.connect((host, int(port)))
        print("OPEN", target, flush=True)
    except Exception as e:
        print("CLOSED", target, type(e).__name__, flush=True)
    s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.sendto(b"netprobe", (host, int(port)))
    except Exception:
        pass
    u.close()
seen = 0
for table in ("tcp", "tcp6", "udp", "udp6"):
    try:
        lines = open("/proc/net/" + table).read().splitlines()[1:]
    except OSError:
        continue
    seen += sum(1 for line in lines if line.split()[7] == victim)
print("SEES", seen, flush=True)
