"""Fusion back ends: the template, an OpenAI-compatible server on loopback (success, retries, timeout, malformed
answers, refusals), a tiny local `transformers` LM; and no caption word of the reference ever in the result."""

import base64
import http.server
import json
import re
import threading
import time

import cv2
import numpy as np
import pytest

from omnidirector_jax.data import sample_trajectories as st
from omnidirector_jax.prompting import fusion
from omnidirector_jax.prompting.fusion import HTTPBackend, PromptError
from omnidirector_jax.prompting.rules import describe

CAMERA = describe(st.named("three_shot")).text
CAPTION = "a red barn in a snowy field with horses"  # what the reference video shows: must never leak
IMAGE = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)


class _Server:
    """A chat-completions server on 127.0.0.1 answering from a queue of (status, body or callable, delay)."""

    def __init__(self):
        self.replies, self.requests = [], []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, dict(self.headers), body))
                status, answer, delay = outer.replies.pop(0)
                time.sleep(delay)
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def _reply(text, **message):
    return {"choices": [{"message": {"role": "assistant", "content": text, **message}, "finish_reason": "stop"}]}


def _backend(server, **kw):
    return HTTPBackend(server.url, "qwen3-vl", api_key="k", **{"timeout": 2.0, "retries": 1, "backoff": 0.01, **kw})


def test_template_is_user_prompt_then_camera_prompt():
    out = fusion.fuse(CAMERA, "A lighthouse on a cliff at dusk.", IMAGE)
    assert out == f"A lighthouse on a cliff at dusk. {CAMERA}"
    assert fusion.fuse(CAMERA, "  ") == CAMERA


def test_http_success_sends_image_and_camera_but_no_caption(server):
    answer = ("A lighthouse on a cliff at dusk, waves below. The camera quickly dollies in; cut to a wider view as "
              "it trucks right; cut, and it arcs left around the lighthouse.")
    server.replies.append((200, _reply(answer), 0.0))
    out = fusion.fuse(CAMERA, "A lighthouse at dusk", IMAGE, _backend(server))
    assert out == answer
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer k"
    assert body["model"] == "qwen3-vl" and body["messages"][0]["role"] == "system"
    text, image = body["messages"][1]["content"]
    assert CAMERA in text["text"] and "A lighthouse at dusk" in text["text"]
    url = image["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    png = cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(png[..., ::-1], IMAGE)  # the user's image, lossless
    sent = json.dumps(body).lower()
    assert not any(re.search(rf"\b{w}\b", sent) for w in ("barn", "snowy", "horses", "field", "red"))


def test_http_sends_keyframes_as_separate_images():
    body = HTTPBackend("http://127.0.0.1:1/v1", "m").request_body(CAMERA, "cliff", np.stack([IMAGE, IMAGE[::-1]]))
    parts = body["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url"]
    with pytest.raises(PromptError, match="uint8 RGB"):
        HTTPBackend("http://127.0.0.1:1/v1", "m").request_body(CAMERA, "cliff", IMAGE.astype(np.float32))


def test_http_retries_a_server_error_then_succeeds(server):
    answer = "A cliff. The camera dollies in; cut; it trucks right; cut; it arcs left."
    server.replies += [(503, {"error": "busy"}, 0.0), (200, _reply(answer), 0.0)]
    assert fusion.fuse(CAMERA, "cliff", None, _backend(server)) == answer
    assert len(server.requests) == 2


def test_http_timeout_is_a_clear_error_after_the_retries(server):
    server.replies += [(200, _reply("late"), 1.0), (200, _reply("late"), 1.0)]
    with pytest.raises(PromptError, match=r"no answer after 2 tries \(.*timed out"):
        fusion.fuse(CAMERA, "cliff", None, _backend(server, timeout=0.3))


@pytest.mark.parametrize("answer", [b"<html>gateway</html>", {"choices": []}, {"result": "ok"},
                                    {"choices": [{"message": {"content": None}}]}])
def test_http_malformed_answers(server, answer):
    server.replies.append((200, answer, 0.0))
    with pytest.raises(PromptError, match="not JSON|malformed"):
        fusion.fuse(CAMERA, "cliff", None, _backend(server))


@pytest.mark.parametrize("answer", [_reply(None, refusal="I can't help with that."),
                                    _reply("I'm sorry, but I can't help with this request."),
                                    {"choices": [{"message": {"content": ""}, "finish_reason": "content_filter"}]}])
def test_http_refusals(server, answer):
    server.replies.append((200, answer, 0.0))
    with pytest.raises(PromptError, match="refused"):
        fusion.fuse(CAMERA, "cliff", None, _backend(server))


def test_http_client_error_is_not_retried(server):
    server.replies.append((401, {"error": "bad key"}, 0.0))
    with pytest.raises(PromptError, match="HTTP 401"):
        fusion.fuse(CAMERA, "cliff", None, _backend(server))
    assert len(server.requests) == 1


def test_answer_that_drops_the_camera_gets_it_back():
    assert fusion.check_answer("A cliff at dusk.", CAMERA) == f"A cliff at dusk. {CAMERA}"
    # Every move and cut must survive: dropping the truck and the arc brings the camera prompt back.
    assert fusion.check_answer("A cliff; the camera dollies in, cut.", CAMERA).endswith(CAMERA)
    one = describe(st.named("dolly")).text
    assert fusion.check_answer("A cliff; the camera dollies in.", one) == "A cliff; the camera dollies in."
    with pytest.raises(PromptError, match="empty"):
        fusion.check_answer("  \n", CAMERA)


def test_backend_settings_are_checked():
    with pytest.raises(PromptError, match="--endpoint"):
        fusion.make_backend("http", endpoint="localhost:8000")
    with pytest.raises(PromptError, match="--model-dir"):
        fusion.make_backend("transformers")
    with pytest.raises(PromptError, match="unknown prompt back end"):
        fusion.make_backend("oracle")


def test_transformers_backend_with_a_tiny_random_model(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    pre = pre_tokenizers.Whitespace()
    given = fusion.SYSTEM + " " + fusion.user_message(CAMERA, "lighthouse at dusk") + " Prompt:"
    words = sorted({w for w, _ in pre.pre_tokenize_str(given)})  # everything the model is shown, nothing else
    vocab = {w: i for i, w in enumerate(["[unk]", "[pad]", "[eos]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[unk]"))
    tok.pre_tokenizer = pre
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[unk]", pad_token="[pad]",
                                                eos_token="[eos]")
    fast.save_pretrained(tmp_path)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(vocab), n_positions=512, n_embd=16, n_layer=1, n_head=2,
                                     eos_token_id=2, bos_token_id=2, pad_token_id=1)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)

    backend = fusion.make_backend("transformers", model_dir=str(tmp_path))
    backend.max_new_tokens = 12
    out = fusion.fuse(CAMERA, "lighthouse at dusk", IMAGE, backend)
    generated = out[:-len(CAMERA)].strip() if out.endswith(CAMERA) else out
    assert generated and set(w for w, _ in pre.pre_tokenize_str(generated)) <= set(words)
    assert all(w in out.lower() for w in ("doll", "truck", "arc", "cut"))  # the camera survives a babbling model
    with pytest.raises(PromptError, match="cannot load"):
        fusion.make_backend("transformers", model_dir=str(tmp_path / "nothing"))
