"""Fusion: camera prompt + the user's image + the user's prompt -> one detailed prompt for the model (design §6).

Back ends:

* ``template`` (offline default): the user's prompt, then the camera prompt, verbatim;
* ``http``: an OpenAI-compatible chat-completions endpoint (e.g. a local vLLM server with Qwen3-VL); the user's
  image goes along as a base64 PNG; timeouts and retries; an empty, malformed or refused answer is an error;
* ``transformers``: a local text-only causal LM from a folder (``local_files_only``); it never sees the image.

Inputs are only the camera prompt (computed from poses), the user's image and the user's prompt: the reference
video's frames and caption never reach a back end, so the result cannot carry the reference's content. A model
answer that drops any camera move or cut gets the rule-based camera prompt appended, so the camera is never lost.
"""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.error
import urllib.request
from typing import Protocol

import numpy as np

from omnidirector_jax.errors import OmniDirectorError

BACKENDS = ("template", "http", "transformers")

SYSTEM = ("You write prompts for a video generator that copies a given camera motion. Combine the user's "
          "description and the attached first frame into one detailed paragraph describing the scene, its "
          "subjects and lighting. Keep the camera motion exactly as given, in the same order, including every cut. "
          "Do not invent other camera moves. Answer with the paragraph only.")

_REFUSAL = re.compile(r"^\s*(i'm sorry|i am sorry|sorry,|i can't|i cannot|i can not|i won't|i will not|"
                      r"as an ai|i'm unable|i am unable)", re.IGNORECASE)


class PromptError(OmniDirectorError):
    """A fusion back end failed or answered something unusable."""


class Backend(Protocol):
    def fuse(self, camera_text: str, user_prompt: str, image: np.ndarray | None) -> str: ...


def user_message(camera_text: str, user_prompt: str) -> str:
    return f"User's description: {user_prompt.strip() or '(none)'}\nCamera motion: {camera_text}"


def check_answer(answer: str, camera_text: str, motion_words: tuple[str, ...] = ()) -> str:
    """A model's answer made safe: non-empty, not a refusal, camera motion kept (the camera prompt is appended
    when the answer lacks any of its moves or its cuts)."""
    answer = " ".join(answer.split())
    if not answer:
        raise PromptError("the prompt model gave an empty answer")
    if _REFUSAL.match(answer):
        raise PromptError(f"the prompt model refused: {answer[:120]!r}")
    words = motion_words or _motion_words(camera_text)
    if not all(w in answer.lower() for w in words):
        answer = f"{answer} {camera_text}"
    return answer


def _motion_words(camera_text: str) -> tuple[str, ...]:
    stems = ("doll", "truck", "pedestal", "pan", "tilt", "roll", "arc", "still", "cut")
    lower = camera_text.lower()
    return tuple(s for s in stems if s in lower)


class TemplateBackend:
    """No model: ``"{user prompt}. {camera prompt}"``."""

    def fuse(self, camera_text: str, user_prompt: str, image: np.ndarray | None) -> str:
        user = user_prompt.strip().rstrip(".")
        return f"{user}. {camera_text}" if user else camera_text


def encode_png(image: np.ndarray) -> bytes:
    """uint8 RGB [H, W, 3] -> PNG bytes."""
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise PromptError(f"the image must be uint8 RGB [H, W, 3], got {image.dtype} {image.shape}")
    ok, buf = cv2.imencode(".png", image[..., ::-1])
    if not ok:
        raise PromptError("could not encode the image as PNG")
    return buf.tobytes()


def read_image(path: str) -> np.ndarray:
    """An image file -> uint8 RGB [H, W, 3]."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise PromptError(f"cannot read the image {path}")
    return image[..., ::-1].copy()


class HTTPBackend:
    """OpenAI-compatible ``POST {base_url}/chat/completions`` with the image as a data URL."""

    def __init__(self, base_url: str, model: str, *, api_key: str = "", timeout: float = 60.0, retries: int = 2,
                 backoff: float = 1.0, max_tokens: int = 400) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, timeout
        self.retries, self.backoff, self.max_tokens = retries, backoff, max_tokens

    def request_body(self, camera_text: str, user_prompt: str, image: np.ndarray | None) -> dict:
        """The chat request; `image` is the user's image [H, W, 3] or its keyframes [N, H, W, 3] (uint8 RGB)."""
        content: list[dict] = [{"type": "text", "text": user_message(camera_text, user_prompt)}]
        frames = [] if image is None else list(image) if np.ndim(image) == 4 else [image]
        for frame in frames:
            data = base64.b64encode(encode_png(frame)).decode("ascii")
            content.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}})
        return {"model": self.model, "temperature": 0.0, "max_tokens": self.max_tokens,
                "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]}

    def _post(self, body: bytes) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code} {err.reason}"
                if err.code in (408, 429) or err.code >= 500:
                    continue  # the server may recover: retry
                raise PromptError(f"prompt endpoint {self.url}: {last}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last = str(getattr(err, "reason", err)) or type(err).__name__
                continue
            try:
                return json.loads(raw)
            except ValueError:
                raise PromptError(f"prompt endpoint {self.url}: answer is not JSON: {raw[:120]!r}") from None
        raise PromptError(f"prompt endpoint {self.url}: no answer after {self.retries + 1} tries ({last})")

    def fuse(self, camera_text: str, user_prompt: str, image: np.ndarray | None) -> str:
        answer = self._post(json.dumps(self.request_body(camera_text, user_prompt, image)).encode())
        try:
            choice = answer["choices"][0]
            message = choice["message"]
            content = message.get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise PromptError(f"prompt endpoint {self.url}: malformed answer "
                              f"{json.dumps(answer)[:160]}") from None
        if message.get("refusal") or choice.get("finish_reason") == "content_filter":
            raise PromptError(f"the prompt model refused: {message.get('refusal') or 'content filter'}")
        if isinstance(content, list):  # content parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise PromptError(f"prompt endpoint {self.url}: malformed answer (content {content!r})")
        return check_answer(content, camera_text)


class TransformersBackend:
    """A local causal LM (``AutoModelForCausalLM``/``AutoTokenizer`` from ``folder``, no downloads); greedy."""

    def __init__(self, folder: str, *, max_new_tokens: int = 200) -> None:
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise PromptError("the transformers back end needs the `transformers` and `torch` packages") from None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self.model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as err:
            raise PromptError(f"cannot load a causal LM from {folder}: {str(err).splitlines()[0]}") from None
        self.model.eval()
        self.max_new_tokens = max_new_tokens

    def fuse(self, camera_text: str, user_prompt: str, image: np.ndarray | None) -> str:
        import torch

        user = user_message(camera_text, user_prompt)
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
                tokenize=False, add_generation_prompt=True)
        else:
            text = f"{SYSTEM}\n\n{user}\n\nPrompt:"
        inputs = self.tokenizer(text, return_tensors="pt")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else \
            self.tokenizer.eos_token_id
        with torch.no_grad():
            # At least a few tokens: a model that stops at once would only give an empty-answer error.
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      min_new_tokens=min(8, self.max_new_tokens), pad_token_id=pad)
        answer = self.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return check_answer(answer, camera_text)


def make_backend(kind: str = "template", *, endpoint: str = "", model: str = "", model_dir: str = "",
                 api_key: str = "", timeout: float = 60.0, retries: int = 2) -> Backend:
    """A back end by name (``template`` | ``http`` | ``transformers``) with its settings checked."""
    if kind == "template":
        return TemplateBackend()
    if kind == "http":
        if not endpoint.startswith(("http://", "https://")):
            raise PromptError(f"the http back end needs --endpoint http(s)://HOST[:PORT]/v1, got {endpoint!r}")
        return HTTPBackend(endpoint, model or "default", api_key=api_key, timeout=timeout, retries=retries)
    if kind == "transformers":
        if not model_dir:
            raise PromptError("the transformers back end needs --model-dir (a folder with a saved causal LM)")
        return TransformersBackend(model_dir)
    raise PromptError(f"unknown prompt back end '{kind}' (choose from {', '.join(BACKENDS)})")


def fuse(camera_text: str, user_prompt: str, image: np.ndarray | None = None,
         backend: Backend | None = None) -> str:
    """The detailed prompt for the model: camera prompt, user's image and user's prompt through ``backend``."""
    return (backend or TemplateBackend()).fuse(camera_text, user_prompt, image)
