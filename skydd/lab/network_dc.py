"""Stand-ins for the classified segment's services, run inside the `dc` namespace by the lab:
the social-care application over HTTPS (lab certificate) and a listener on the database port.

The database listener is a placeholder until a real PostgreSQL runs in the namespace: start the
lab network with ``db_port=0`` (or stop this process' listener) and bind PostgreSQL instead.

    python -m skydd.lab.network_dc --bind 10.0.10.2 --cert C --key K [--https-port 443] [--db-port 5432]
"""

from __future__ import annotations

import argparse
import socketserver
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b"socialcare stand-in: ok\n"


class _App(BaseHTTPRequestHandler):
    server_version = "socialcare-standin/1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, fmt: str, *args: object) -> None:
        pass


class _TlsServer(ThreadingHTTPServer):
    """TLS per connection, in the connection's thread: a client whose handshake the IPS drops
    must not block ``accept`` for everyone else."""

    daemon_threads = True
    context: ssl.SSLContext

    def finish_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        request.settimeout(10)
        with self.context.wrap_socket(request, server_side=True) as tls:
            super().finish_request(tls, client_address)

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        pass  # a dropped or broken handshake is the IPS at work, not a server fault


class _Db(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"socialcare-db stand-in\n")


class _TcpServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m skydd.lab.network_dc")
    p.add_argument("--bind", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--https-port", type=int, default=443)
    p.add_argument("--db-port", type=int, default=5432)
    args = p.parse_args(argv)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    httpd = _TlsServer((args.bind, args.https_port), _App)
    httpd.context = ctx
    if args.db_port:
        db = _TcpServer((args.bind, args.db_port), _Db)
        threading.Thread(target=db.serve_forever, daemon=True).start()
    httpd.serve_forever()


if __name__ == "__main__":
    main()
