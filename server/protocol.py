"""The JSON-RPC layer under the language server: every request gets an answer, a finished
message leaves nothing behind, and only one copy of each open document is kept.

Why not pygls' own (2.1): its message loop (``pygls.io_.run_async``) decodes a body with
``json.loads(body, object_hook=protocol.structure_message)``, so

* a body that is not UTF-8 or not JSON, and a request whose params no LSP type admits
  (a negative position, a line ≥ 2³¹, params of the wrong shape), raise *before* the request
  is known: the exception is logged with a traceback and the client never gets an answer;
* a ``Content-Length`` past the end of memory or a connection cut mid-body ends the loop
  with an exception.

and the protocol keeps, in ``_request_futures``, the future of every notification handled by
a generator or a coroutine and of every command's inner handler (their params and results
with it) until the process ends — one entry per ``didChange``, ``didSave``, search...: memory
that grows for as long as the session lasts.  pygls also keeps a second copy of every open
document that it re-splits into lines on every change; the server never reads it
(:class:`~pathfusion.server.lsp_server.PathfusionServer` keeps its own documents, :mod:`pathfusion.server.documents`).

:func:`serve_messages` replaces the loop: a body is decoded strictly (UTF-8, JSON without
``NaN``/``Infinity``), checked to be a JSON-RPC 2.0 message, and structured; what fails is
answered as JSON-RPC says — ``-32700`` (parse error) or ``-32600`` (invalid request) with the
request's id when it can be read, else ``null``; ``-32602`` (invalid params) with its id —
logged in one line, without a traceback.  :class:`RobustProtocol` forgets finished futures,
answers ``-32602`` raised by a handler without a traceback, answers requests that arrive
after ``shutdown`` with ``-32600`` instead of dropping them, ends quietly a message whose
handler was cancelled (pygls logs it as an error), and leaves the document sync to the
server's handlers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import threading
from collections.abc import Callable
from typing import Any

from lsprotocol import types
from pygls.exceptions import (
    JsonRpcException,
    JsonRpcInvalidParams,
    JsonRpcInvalidRequest,
    JsonRpcParseError,
)
from pygls.io_ import StdinAsyncReader, StdoutWriter
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.json_rpc import (
    JsonRPCNotification,
    JsonRPCRequestMessage,
    JsonRPCResponseMessage,
)
from pygls.protocol.language_server import lsp_method

log = logging.getLogger(__name__)

MAX_BODY = 1 << 30
"""Bytes; a longer body is skipped (read and dropped in chunks) and answered -32600."""
_SKIP_CHUNK = 1 << 20
_CONTENT_LENGTH = re.compile(rb"content-length:[ \t]*(\d+)[ \t]*\r?\n?", re.IGNORECASE)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def describe_error(exc: BaseException, limit: int = 3) -> str:
    """One line saying why params could not be structured (cattrs' paths when it has them)."""
    try:
        from cattrs import transform_error
        from cattrs.v import format_exception

        def fmt(error: BaseException, target: Any) -> str:  # a validator's own words when it has some
            if isinstance(error, ValueError) and str(error):
                return str(error).rstrip(".")
            return format_exception(error, target)

        lines = transform_error(exc, format_exception=fmt)
    except Exception:
        lines = [str(exc)]
    text = "; ".join(line.replace("\n", " ") for line in lines[:limit]) or type(exc).__name__
    return text if len(lines) <= limit else f"{text}; ..."


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def well_formed(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD.  JSON lets a client send
    ``"\\ud800"`` alone; such a string cannot be encoded (UTF-8 encoders and tokenizers refuse
    it), so request text that reaches one is made well-formed first."""
    return text if text.isascii() else _LONE_SURROGATE.sub("\ufffd", text)


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, int | str) and not isinstance(value, bool))


class RobustProtocol(LanguageServerProtocol):
    """pygls' LSP protocol with the answers and the bookkeeping described in the module
    docstring.  :meth:`handle_body` is the entry point of :func:`serve_messages`."""

    # -- bodies -> messages ----------------------------------------------------------------------
    def handle_body(self, body: bytes) -> None:
        """Decode one message body and handle it; anything that is not a JSON-RPC 2.0
        message gets the error JSON-RPC prescribes (when it may be answered at all)."""
        try:
            data = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
        except UnicodeDecodeError as exc:
            self.reject(None, JsonRpcParseError(f"Parse error: the message is not valid UTF-8 (byte {exc.start})"))
            return
        except (ValueError, RecursionError) as exc:
            self.reject(None, JsonRpcParseError(f"Parse error: the message is not JSON ({exc})"))
            return
        if not isinstance(data, dict):
            self.reject(None, JsonRpcInvalidRequest("Invalid request: a message must be a JSON object"))
            return
        msg_id = data.get("id")
        method = data.get("method")
        has_id = "id" in data
        if not _valid_id(msg_id):
            self.reject(None, JsonRpcInvalidRequest("Invalid request: an id must be a number or a string"))
            return
        if data.get("jsonrpc") != self.VERSION:
            self.reject(msg_id if has_id else None, JsonRpcInvalidRequest('Invalid request: "jsonrpc" must be "2.0"'))
            return
        if "method" in data and not isinstance(method, str):
            self.reject(msg_id if has_id else None, JsonRpcInvalidRequest("Invalid request: the method must be a string"))
            return
        if method is None and not ("result" in data or "error" in data):
            self.reject(msg_id, JsonRpcInvalidRequest("Invalid request: neither a request, a notification nor a response"))
            return
        is_request = method is not None and has_id
        if is_request and self._shutdown and method != types.EXIT:
            self.reject(msg_id, JsonRpcInvalidRequest("Invalid request: the server is shutting down"))
            return
        try:
            message = self.structure_message(data)
        except JsonRpcException as exc:
            if is_request:
                log.warning("request %r (%s) refused: %s", msg_id, method, exc.message)
                self.reject(msg_id, exc)
            elif method is not None:
                log.warning("notification %s dropped: %s", method, exc.message)
            else:
                log.warning("response %r unreadable: %s", msg_id, exc.message)
                future = self._request_futures.pop(msg_id, None) if msg_id is not None else None
                if future is not None and not future.done():
                    future.set_exception(exc)
            return
        self.handle_message(message)

    def reject(self, msg_id: Any, error: JsonRpcException) -> None:
        """Answer ``msg_id`` (None: ``"id": null``) with ``error``."""
        if msg_id is None:
            log.warning("message refused: %s", error.message)
        self._send_data({"jsonrpc": self.VERSION, "id": msg_id, "error": {"code": error.code, "message": error.message}})

    def structure_message(self, data: dict[str, Any]) -> Any:
        """pygls' structuring, with one-line errors: ``-32602`` naming what is wrong and
        where (pygls logs a traceback for each and raises an error nobody answers)."""
        if "jsonrpc" not in data:
            return data
        try:
            if "id" in data:
                if "error" in data:
                    return self._converter.structure(data, types.ResponseErrorMessage)
                if "method" in data:
                    return self._converter.structure(
                        data, self.get_message_type(data["method"]) or JsonRPCRequestMessage)
                response_type = self._result_types.pop(data["id"], None) or JsonRPCResponseMessage
                return self._converter.structure(data, response_type)
            method = data.get("method", "")
            return self._converter.structure(data, self.get_message_type(method) or JsonRPCNotification)
        except Exception as exc:  # cattrs' ClassValidationError and whatever a bad shape raises
            raise JsonRpcInvalidParams(f"Invalid params: {describe_error(exc)}") from exc

    # -- answers and bookkeeping -----------------------------------------------------------------
    def _send_handler_result(self, future: Any, *, msg_id: Any) -> None:
        """As pygls, but a handler's clean refusal (invalid params or request) is answered
        without a traceback in the log."""
        if not future.cancelled():
            exc = future.exception()
            if isinstance(exc, JsonRpcInvalidParams | JsonRpcInvalidRequest):
                self._request_futures.pop(msg_id, None)
                log.warning("request %r refused: %s", msg_id, exc.message)
                self._send_response(msg_id, error=exc.to_response_error())
                return
        super()._send_handler_result(future, msg_id=msg_id)

    def _execute_handler(
        self, msg_id: Any, handler: Any, callback: Callable[[Any], None],
        args: tuple[Any, ...] | None = None, kwargs: dict[str, Any] | None = None,
    ) -> None:
        """As pygls, and the handler's future is forgotten once its callback ran (pygls
        forgets only the futures of requests, which ``_send_handler_result`` pops).

        A handler cancelled before it finished (the server ending while ``initialized``
        still waits for the client's settings) ends the message it served: pygls's
        generator runner reads the cancelled handler's result, and the ``CancelledError``
        would reach the event loop, logged as an error with a traceback on a clean exit."""

        def done(future: Any) -> None:
            try:
                callback(future)
            except asyncio.CancelledError:
                outer = getattr(callback, "keywords", {}).get("result_future")
                if outer is not None and not outer.done():
                    outer.cancel()  # the message the generator served: answered as cancelled
                log.debug("handler %s cancelled before it finished", getattr(handler, "__name__", handler))
            finally:
                if self._request_futures.get(msg_id) is future:
                    del self._request_futures[msg_id]

        super()._execute_handler(msg_id, handler, done, args, kwargs)

    # -- document sync: the server's handlers only ------------------------------------------------
    def _user_handler(self, method: str, params: Any) -> Any:
        if (handler := self.fm.features.get(method)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> Any:
        return (yield from self._user_handler(types.TEXT_DOCUMENT_DID_OPEN, params))

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams) -> Any:
        return (yield from self._user_handler(types.TEXT_DOCUMENT_DID_CHANGE, params))

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> Any:
        return (yield from self._user_handler(types.TEXT_DOCUMENT_DID_CLOSE, params))


# -- the message loop ----------------------------------------------------------------------------
async def serve_messages(stop_event: threading.Event, reader: Any, protocol: RobustProtocol) -> None:
    """Read ``Content-Length`` framed messages from ``reader`` (``readline`` and
    ``readexactly`` coroutines) until the end of the input, handing each body to
    :meth:`RobustProtocol.handle_body`; a failure to handle one message never ends the loop."""
    length: int | None = None
    while not stop_event.is_set():
        header = await reader.readline()
        if not header:
            break
        match = _CONTENT_LENGTH.fullmatch(header)
        if match:
            length = int(match.group(1))
            continue
        if header.strip() or length is None:
            continue  # another header (Content-Type), or a blank line before any length
        size, length = length, None
        if size > MAX_BODY:
            if not await _skip(reader, size):
                break
            protocol.reject(None, JsonRpcInvalidRequest(f"Invalid request: a {size}-byte message is too large"))
            continue
        try:
            body = await reader.readexactly(size)
        except asyncio.IncompleteReadError:
            break
        if len(body) < size:  # the input ended inside the body
            break
        try:
            protocol.handle_body(body)
        except Exception:  # a bug in a handler's dispatch: log it, keep serving
            log.exception("cannot handle a message")


async def _skip(reader: Any, size: int) -> bool:
    """Read and drop ``size`` bytes; False when the input ends first."""
    while size > 0:
        try:
            chunk = await reader.readexactly(min(size, _SKIP_CHUNK))
        except asyncio.IncompleteReadError:
            return False
        if not chunk:
            return False
        size -= len(chunk)
    return True


def start_io(server: Any, stdin: Any = None, stdout: Any = None) -> None:
    """pygls' ``start_io`` (asynchronous variant) with :func:`serve_messages` as its loop."""
    server._stop_event = stop_event = threading.Event()
    reader = StdinAsyncReader(stdin or sys.stdin.buffer, server.thread_pool)
    server.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
    try:
        asyncio.run(serve_messages(stop_event, reader, server.protocol))
    except BrokenPipeError:
        log.error("Connection to the client is lost! Shutting down the server.")
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.shutdown()


def start_tcp(server: Any, host: str, port: int) -> None:
    """pygls' ``start_tcp`` with :func:`serve_messages` as its loop."""
    server._stop_event = stop_event = threading.Event()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.protocol.set_writer(writer)
        await serve_messages(stop_event, reader, server.protocol)
        server.shutdown()

    async def listen() -> None:
        server._server = await asyncio.start_server(connection, host, port, limit=1 << 20)
        async with server._server:
            await server._server.serve_forever()

    try:
        asyncio.run(listen())
    except asyncio.CancelledError:
        log.debug("the TCP server was cancelled")
