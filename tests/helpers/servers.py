"""An OpenAI-compatible judge server on 127.0.0.1 (tests/test_judge.py, tests/test_secrets.py): the tiny model
answers as `vllm serve` would for a real judge, and attributes steer failures, delays and scripted replies."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dipod_trl

MODEL_NAME = "tiny-judge"
GEN_LENGTH = 16


class JudgeServer:
    """A threaded OpenAI-compatible chat server; attributes steer its next answers and record what it saw."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.lock = threading.Lock()
        self.model_lock = threading.Lock()
        self.stopping = threading.Event()
        self.fail_next = 0  # answer this many requests with HTTP 500 first
        self.delay = 0.0  # stall this long before answering
        self.fixed_reply: str | None = None  # answer with this text instead of generating
        self.scripted: list[tuple[int, dict, bytes]] = []  # answer the next requests with these (status, headers, body)
        self.trickle_interval = 0.0  # send the reply one byte at a time, this many seconds apart (at most 40 bytes)
        self.api_key: str | None = None  # require `Authorization: Bearer <api_key>`
        self.flood_bytes = 0  # answer with a JSON-looking body this long, in 1 MiB writes (ends if the client hangs up)
        self.flood_declares_length = False  # ...announced by its Content-Length (else the closed connection ends it)
        self.flood_sent = 0  # bytes of the flood written before it ended
        self.flood_ended = threading.Event()
        self.request_times: list[float] = []
        self.headers_seen: list[dict] = []
        self.requests: list[dict] = []
        self.replies: list[str] = []
        self.in_flight = self.max_in_flight = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def generate(self, messages: list[dict]) -> str:
        """The tiny model's greedy reply to a chat, as `vllm serve` would produce it for a real judge."""
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        limit = self.model.config.max_position_embeddings - GEN_LENGTH
        batch = self.tokenizer(
            [text], add_special_tokens=False, padding=True, truncation=True, max_length=limit, return_tensors="pt"
        )
        with self.model_lock:
            ids, mask = dipod_trl.generate(
                self.model,
                batch["input_ids"],
                batch["attention_mask"],
                gen_length=GEN_LENGTH,
                block_length=GEN_LENGTH,
                steps=4,
                tokenizer=self.tokenizer,
            )
        return self.tokenizer.decode(ids[0][mask[0].bool()], skip_special_tokens=True)

    def stop(self):
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _handler_for(server: JudgeServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send_json(self, status: int, body: dict | bytes, headers: dict | None = None):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                if server.trickle_interval:
                    self.trickle(status, data)
                    return
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout) before the answer came

        def trickle(self, status: int, data: bytes):
            """Headers at once, then the body a byte at a time (40 bytes at most, so the handler ends by itself)."""
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.flush()
            for byte in data[:40]:
                if server.stopping.wait(server.trickle_interval):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()

        def flood(self, size: int):
            """A 200 reply of `size` bytes that opens like a chat completion, written 1 MiB at a time; it stops when
            all is sent or the client hangs up (the memory it needs is one chunk, whatever `size`)."""
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if server.flood_declares_length:
                self.send_header("Content-Length", str(size))
            self.end_headers()
            opening = b'{"choices": [{"message": {"content": "'
            chunk = b"7" * 2**20
            try:
                while server.flood_sent < size and not server.stopping.is_set():
                    piece = (opening if server.flood_sent == 0 else chunk)[: size - server.flood_sent]
                    self.wfile.write(piece)
                    server.flood_sent += len(piece)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                server.flood_ended.set()

        def do_GET(self):
            if self.path == "/v1/models":
                self.send_json(200, {"object": "list", "data": [{"id": MODEL_NAME, "object": "model"}]})
            else:
                self.send_json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            if self.path != "/v1/chat/completions":
                self.send_json(404, {"error": {"message": f"no route {self.path}"}})
                return
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with server.lock:
                server.request_times.append(time.monotonic())
                server.headers_seen.append(dict(self.headers))
                scripted = server.scripted.pop(0) if server.scripted else None
            if server.flood_bytes:
                self.flood(server.flood_bytes)
                return
            if server.api_key is not None and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                self.send_json(401, {"error": {"message": "Unauthorized"}})  # what vLLM's --api-key answers
                return
            if scripted is not None:
                self.send_json(scripted[0], scripted[2], scripted[1])
                return
            with server.lock:
                server.requests.append(payload)
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
                fail = server.fail_next > 0
                server.fail_next -= fail
            try:
                status, body = self.answer(payload, fail)
            finally:
                # Out of flight before the reply is written: once the client has it, it may send the next request
                # at once, and counting that one while this handler is still finishing would overstate concurrency.
                with server.lock:
                    server.in_flight -= 1
            self.send_json(status, body)

        def answer(self, payload: dict, fail: bool) -> tuple[int, dict]:
            if fail:
                return 500, {"error": {"message": "internal server error"}}
            if payload.get("model") != MODEL_NAME:
                return 404, {"error": {"message": f"The model `{payload.get('model')}` does not exist."}}
            if server.delay:
                server.stopping.wait(server.delay)
            text = server.fixed_reply if server.fixed_reply is not None else server.generate(payload["messages"])
            with server.lock:
                server.replies.append(text)
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return 200, {"object": "chat.completion", "model": MODEL_NAME, "choices": [choice]}

    return Handler
