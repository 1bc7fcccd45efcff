"""Serving the web app (``flowjobs web``, ``flowjobs up``): uvicorn with its httptools parser, which
bounds each request's head before the app runs.

uvicorn reads headers of any size and number (a 64 MiB header line is buffered whole). The protocol
here counts them as the parser goes: more header bytes than ``FLOWJOBS_WEB_MAX_HEADER_BYTES`` (each
header counted as its ``name: value`` line) or more headers than ``FLOWJOBS_WEB_MAX_HEADERS``
answer 431, a request target longer than ``FLOWJOBS_WEB_MAX_URL_BYTES`` 414, and the connection
closes. A single header line still being received is bounded too: the bytes of an unfinished head
count as they arrive (one socket read at most beyond the limit is buffered).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from flowjobs.settings import Settings

#: Allowance for the request line's method, spaces and version and the head's last line end in the
#: count of an unfinished head's bytes.
HEAD_SLACK_BYTES = 1024
#: Bytes a header costs beyond its name and value: ``": "`` and ``"\r\n"``.
HEADER_LINE_OVERHEAD = 4


@dataclass(frozen=True)
class HeadLimits:
    """What the server reads of a request's head."""

    url_bytes: int
    header_bytes: int
    headers: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HeadLimits:
        """The settings' ``web_max_*`` bounds."""
        return cls(settings.web_max_url_bytes, settings.web_max_header_bytes, settings.web_max_headers)

    @property
    def head_bytes(self) -> int:
        """Most bytes a head within the limits can take on the wire (with ``HEAD_SLACK_BYTES``)."""
        return self.url_bytes + self.header_bytes + HEAD_SLACK_BYTES


class _Refused(Exception):
    """A request head over a limit: answered with ``status`` and ``reason``, then the connection closes."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with ``limits`` on each request's head (a subclass sets them:
    uvicorn builds one protocol per connection from the class)."""

    limits: ClassVar[HeadLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._head_bytes = self._url_bytes = self._header_bytes = self._header_count = 0
        self._refusal: _Refused | None = None

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, plus the refusals: a parser callback's exception reaches here wrapped in
        # HttpParserCallbackError, which uvicorn would answer with a bare 400.
        if self.parser is None or self.transport.is_closing() or self._refusal is not None:
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
            if self._in_head and self._head_bytes > self.limits.head_bytes:
                raise _Refused(431, f"request headers larger than {self.limits.header_bytes} bytes")
        except _Refused as refused:
            self._refuse(refused)
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, _Refused):
                self._refuse(error.__context__)
            else:
                self._bad_request()
        except httptools.HttpParserError:
            self._bad_request()
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = self._url_bytes = self._header_bytes = self._header_count = 0

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.limits.url_bytes:
            raise _Refused(414, f"request target longer than {self.limits.url_bytes} bytes")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + HEADER_LINE_OVERHEAD
        if self._header_count > self.limits.headers:
            raise _Refused(431, f"more than {self.limits.headers} request headers")
        if self._header_bytes > self.limits.header_bytes:
            raise _Refused(431, f"request headers larger than {self.limits.header_bytes} bytes")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def _bad_request(self) -> None:
        message = "Invalid HTTP request received."
        self.logger.warning(message)
        self.send_400_response(message)

    def _refuse(self, refused: _Refused) -> None:
        """Read no more of this connection; answer ``refused`` now, or once the responses to the
        requests before it (pipelined) are written."""
        self.logger.warning("Request refused: %s.", refused.reason)
        self._refusal = refused
        self.flow.pause_reading()
        if (self.cycle is None or self.cycle.response_complete) and not self.pipeline:
            self._answer_refusal(refused)

    def on_response_complete(self) -> None:
        if self._refusal is not None and not self.pipeline:
            self.server_state.total_requests += 1
            self._answer_refusal(self._refusal)
            return
        super().on_response_complete()

    def _answer_refusal(self, refused: _Refused) -> None:
        """Write ``refused`` (JSON ``detail``/``error``, as the app's errors) and close."""
        if self.transport.is_closing():
            return
        body = json.dumps({"detail": refused.reason, "error": "RequestHeadTooLarge"}).encode()
        head = [
            STATUS_LINE[refused.status],
            *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def bounded_protocol(limits: HeadLimits) -> type[asyncio.Protocol]:
    """A ``BoundedHttpToolsProtocol`` class for ``limits`` (uvicorn's ``http=``)."""

    class Bounded(BoundedHttpToolsProtocol):
        pass

    Bounded.limits = limits
    return Bounded


def serve(app: FastAPI, settings: Settings) -> None:
    """Serve ``app`` on the settings' address with bounded request heads until SIGINT or SIGTERM."""
    import uvicorn

    uvicorn.run(
        app,
        host=settings.web_host,
        port=settings.web_port,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        http=bounded_protocol(HeadLimits.from_settings(settings)),
    )
