"""How `coder-platform run` serves an app: uvicorn, answering in problem+json at the protocol level too.

A request uvicorn's HTTP parser (httptools) refuses never reaches the app, so no middleware can shape
the answer: a Content-Length beyond 64 bits, a malformed request line or header. uvicorn writes a
plain-text 400 for those from `send_400_response`; this protocol, a subclass of uvicorn's own (the
smallest change that reaches that answer), writes the platform's problem+json and common headers.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from coder.shared.errors import PROBLEM_BASE, PROBLEM_MEDIA_TYPE
from coder.shared.protocol import COMMON_HEADERS

_UNPARSABLE = json.dumps(
    {
        "type": PROBLEM_BASE + "bad-request",
        "title": "Bad request",
        "status": 400,
        "detail": "the request is not valid HTTP/1.1 (request line, headers or Content-Length)",
    }
).encode()


class ProblemHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        content = [STATUS_LINE[400]]
        for name, value in [*self.server_state.default_headers, *COMMON_HEADERS]:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: " + PROBLEM_MEDIA_TYPE.encode() + b"\r\n",
                b"content-length: " + str(len(_UNPARSABLE)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                _UNPARSABLE,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()
