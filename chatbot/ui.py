"""The chat UI (`chatbot serve`): a Gradio app over one warm `Pipeline`.

A chat with streamed, cited answers and clearly styled refusals; beside it an inspection
panel for the last answer (every candidate's scores and fate, the floor in a chart, the
stage latencies, the chunk text on click); thumbs up/down on answers and on chunks, stored
in the score traces; and a knowledge-base tab to upload documents and see what is indexed.

The app fetches nothing from outside (system fonts, no analytics), binds to 127.0.0.1
unless told otherwise, and never shows an API key.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

from chatbot import present
from chatbot.conversation import Rewrite, load_rewrite_prompt, rewrite_question
from chatbot.errors import ChatbotError
from chatbot.pipeline import AnswerDelta, Evidence, Pipeline, clean_question
from chatbot.types import EVERYONE, AskResult, Viewer
from chatbot.users import LOOPBACK_HOSTS, AuthError, UserStore

LOG = logging.getLogger("chatbot.ui")

# What ingest reads (ingest.parse.SUPPORTED_SUFFIXES; the UI does not import ingest, the CLI composes them).
UPLOAD_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".docx", ".xlsx", ".csv", ".tsv", ".pptx",
                   ".png", ".jpg", ".jpeg", ".tif", ".tiff")
CSS = """
#chat .refusal { border-left: 4px solid #b71c1c; background: #fdecea; padding: 6px 10px; border-radius: 4px; }
#chat .refusal, #chat .refusal strong { color: #b71c1c !important; font-size: 1.05em; }
#inspection-table { font-size: 0.85em; }
footer { display: none !important; }
"""


class UploadRejected(ChatbotError):
    """An uploaded file cannot be accepted (name, type or size)."""


class IngestReportLike(Protocol):
    failed: list[tuple[str, str]]

    def summary(self) -> str: ...


# (paths, progress wrapper) -> report; built by the CLI, which is the one place that may import `ingest`.
IngestFn = Callable[[Sequence[Path], Callable[[Iterable, int], Iterable]], IngestReportLike]


def safe_upload_name(name: str) -> str:
    """The file name an upload is stored under: its last path component only, so no name
    ("../../etc/passwd", "..\\\\x", "/abs") can leave the upload folder; no control characters,
    no leading dots (hidden files), and one of the supported document types."""
    base = unicodedata.normalize("NFC", name.replace("\\", "/")).split("/")[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip().lstrip(".").strip()
    if not base:
        raise UploadRejected(f"the file name {name!r} is empty once path parts are removed")
    if not base.lower().endswith(UPLOAD_SUFFIXES):
        raise UploadRejected(f"{base}: not a supported type; upload {', '.join(UPLOAD_SUFFIXES)}")
    return base[:200]


def store_upload(source: Path, original_name: str, upload_dir: Path, max_bytes: int) -> Path:
    name = safe_upload_name(original_name)
    size = source.stat().st_size
    if size > max_bytes:
        raise UploadRejected(f"{name} is {size / 2**20:.1f} MiB; the upload limit is {max_bytes / 2**20:.0f} MiB "
                             "(config key upload_max_mb)")
    upload_dir.mkdir(parents=True, exist_ok=True)
    target = (upload_dir / name).resolve()
    if not target.is_relative_to(upload_dir.resolve()):  # belt and braces: safe_upload_name already prevents it
        raise UploadRejected(f"{original_name}: the name would leave the upload folder")
    shutil.copyfile(source, target)
    return target


@dataclass
class ChatSession:
    """One browser session's conversation: what the inspection panel and feedback refer to."""

    standalone_questions: list[str] = field(default_factory=list)
    trace_of_message: dict[int, str] = field(default_factory=dict)  # chat message index -> trace id
    last_result: AskResult | None = None
    last_rewrite: Rewrite | None = None
    selected_chunk: str | None = None
    viewer: str | None = None  # whose conversation this is


class ChatApp:
    def __init__(self, pipeline: Pipeline, *, ingest: IngestFn | None = None, upload_dir: Path | None = None,
                 upload_max_bytes: int = 25 * 2**20, llm_label: str = "", replay_tab: bool = False,
                 users: UserStore | None = None, trusted_header: str = "", trusted_proxy: str = ""):
        """`users`: each person signs in as a user and reads only their groups' documents (None: one shared
        login, or none, and everyone reads everything). `trusted_header`: take the signed-in user's name from
        this request header, set by an SSO proxy at `trusted_proxy` (or on loopback) and by no one else."""
        self.pipeline = pipeline
        self.users = users
        self.trusted_header = trusted_header.lower()
        self.trusted_proxy = trusted_proxy
        # The Replay tab shows every stored question, whoever asked it: for the knowledge base's owners.
        self.replay_tab = replay_tab
        self.ingest = ingest
        self.upload_dir = upload_dir
        self.upload_max_bytes = upload_max_bytes
        self.llm_label = llm_label or ("none: answers quote the evidence (extractive mode)"
                                       if pipeline.llm is None else f"{pipeline.llm.endpoint}")
        self._rewrite_prompt: str | None = None

    # --- chat -------------------------------------------------------------------------------------------

    def rewrite(self, session: ChatSession, question: str) -> Rewrite:
        if self.pipeline.llm is not None and self._rewrite_prompt is None:
            self._rewrite_prompt = load_rewrite_prompt(self.pipeline.config.prompts_dir)
        return rewrite_question(session.standalone_questions, question, self.pipeline.llm, self._rewrite_prompt or "")

    def viewer_of(self, request: Any) -> Viewer | None:
        """Who is asking: the signed-in user (or the user the trusted proxy names), with their groups; None
        without users (everyone reads everything). Raises AuthError for anyone else."""
        if self.users is None:
            return None
        if self.trusted_header:
            client = getattr(getattr(request, "client", None), "host", None)
            if client not in ((self.trusted_proxy,) if self.trusted_proxy else LOOPBACK_HOSTS):
                LOG.warning("refused: header %s from %s, which is not the trusted proxy", self.trusted_header, client)
                raise AuthError("the sign-in header did not come from the trusted proxy")
            name = (getattr(request, "headers", {}) or {}).get(self.trusted_header, "")
        else:
            name = getattr(request, "username", None) or ""
        try:
            return self.users.viewer(name)
        except ChatbotError:
            LOG.warning("refused: no user %r", name)
            raise AuthError("you are not signed in as a user of this knowledge base; sign in again") from None

    def check_login(self, name: str, password: str) -> bool:
        """Gradio's sign-in check: a user's argon2-verified password. Refusals are logged, never the password."""
        try:
            self.users.verify(name, password)
            return True
        except AuthError:
            LOG.warning("sign-in refused for %r", name)
            return False

    def respond(self, message: str, history: list[dict] | None, session: ChatSession | None, request: Any = None):
        """Generator for the chat event: yields (textbox, chat, session, *panel)."""
        session = session or ChatSession()
        history = list(history or [])
        history.append({"role": "user", "content": message or ""})
        history.append({"role": "assistant", "content": "*Searching the knowledge base…*"})
        skip = self._panel_skip()
        yield "", history, session, *skip
        try:
            viewer = self.viewer_of(request)
            if session.viewer != (viewer.name if viewer else None):  # a session never carries one user's
                session.standalone_questions.clear()               # history into another's follow-ups
                session.viewer = viewer.name if viewer else None
            rewrite = self.rewrite(session, clean_question(message or ""))
            text = ""
            for event in self.pipeline.ask_stream(rewrite.standalone, viewer=viewer):
                if isinstance(event, Evidence):
                    session.last_rewrite = rewrite
                    writing = "*Writing the answer…*" if event.gate.kept and self.pipeline.llm else ""
                    history[-1] = {"role": "assistant", "content": writing or "*…*"}
                    yield "", history, session, *self._panel(event.gate, rewrite, event.timings_ms, ())
                elif isinstance(event, AnswerDelta):
                    text += event.text
                    history[-1] = {"role": "assistant", "content": text}
                    yield "", history, session, *skip
                else:
                    result = event
        except ChatbotError as e:
            history[-1] = {"role": "assistant", "content": f"⚠️ {e}"}
            yield "", history, session, *skip
            return
        if result.trace_error:  # the user keeps the answer; whoever runs the server learns the trace is missing
            LOG.warning("%s (question: %r)", result.trace_error, result.question[:200])
        session.last_result = result
        session.standalone_questions.append(rewrite.standalone)
        session.selected_chunk = None
        if result.trace_id:
            session.trace_of_message[len(history) - 1] = result.trace_id
        history[-1] = {"role": "assistant", "content": present.outcome_markdown(result)}
        cited = () if result.refused else result.outcome.cited
        yield "", history, session, *self._panel(result.gate, rewrite, result.timings_ms, cited)

    def _panel(self, gate, rewrite: Rewrite, timings_ms: dict, cited) -> tuple:
        return (present.floor_markdown(gate, rewrite.asked, rewrite.standalone),
                present.candidate_rows(gate, cited), present.chart_image(gate),
                present.timings_markdown(timings_ms), "*Click a row to read its chunk.*")

    @staticmethod
    def _panel_skip() -> tuple:
        import gradio as gr

        return tuple(gr.skip() for _ in range(5))

    def select_chunk(self, session: ChatSession | None, evt: Any) -> tuple[str, ChatSession | None]:
        if session is None or session.last_result is None:
            return "", session
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        ranked = session.last_result.gate.ranked
        if not 0 <= row < len(ranked):
            return "", session
        candidate = ranked[row]
        session.selected_chunk = candidate.chunk.id
        return present.chunk_markdown(candidate, session.last_result.gate.status(candidate.chunk.id)), session

    # --- feedback -----------------------------------------------------------------------------------------

    def _feedback(self, trace_id: str | None, rating: int, chunk_id: str | None = None) -> str:
        if self.pipeline.traces is None:
            return "Feedback is not stored: score traces are turned off (config key traces)."
        if trace_id is None:
            return "Ask a question first."
        try:
            self.pipeline.traces.add_feedback(trace_id, rating, chunk_id)
        except ChatbotError as e:
            return f"⚠️ Could not store the feedback: {e}"
        what = "this chunk" if chunk_id else "the answer"
        return f"Thanks: recorded 👍 for {what}." if rating > 0 else f"Thanks: recorded 👎 for {what}."

    def like_answer(self, session: ChatSession | None, evt: Any) -> str:
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        trace_id = session.trace_of_message.get(index) if session else None
        if trace_id is None:
            return "Only the bot's answers take feedback."
        return self._feedback(trace_id, 1 if evt.liked is True or evt.liked == "Like" else -1)

    def rate_chunk(self, session: ChatSession | None, rating: int) -> str:
        if session is None or session.last_result is None or session.selected_chunk is None:
            return "Click a candidate in the table first, then rate it."
        return self._feedback(session.last_result.trace_id, rating, session.selected_chunk)

    # --- knowledge base -------------------------------------------------------------------------------------

    def documents(self, request: Any = None) -> list[list[str]]:
        """The indexed documents the asking user may read, with their chunk counts and groups."""
        try:
            viewer = self.viewer_of(request)
        except AuthError:
            return []
        counts = self.pipeline.store.document_chunk_counts()
        access = self.pipeline.store.document_access()
        return [[present.display_path(path), str(n), ", ".join(access.get(path, ()))]
                for path, n in sorted(counts.items())
                if viewer is None or viewer.reads & set(access.get(path, (EVERYONE,)))]

    def upload(self, files: Sequence[str] | None, progress=None, request: Any = None,
               access: str = "") -> tuple[str, list[list[str]], None]:
        """Store and ingest uploads. Their access: for an admin, the groups they give (default everyone);
        for others, their own groups (everyone when they have none)."""
        if self.ingest is None or self.upload_dir is None:
            return "Uploads are turned off for this server.", self.documents(request), None
        if not files:
            return "Choose one or more files first.", self.documents(request), None
        try:
            viewer = self.viewer_of(request)
        except AuthError as e:
            return f"⚠️ {e}", [], None
        if viewer is None or viewer.admin:
            groups = [g.strip().lower() for g in (access or "").split(",") if g.strip()] or None
        else:
            groups = sorted(viewer.groups) or None
        stored, problems = [], []
        for f in files:
            path = Path(f)
            try:
                stored.append(store_upload(path, path.name, self.upload_dir, self.upload_max_bytes))
            except (UploadRejected, OSError) as e:
                problems.append(f"- {path.name}: {e}")
        if stored:
            wrap = (lambda items, total: progress.tqdm(items, total=total, desc="Ingesting")) if progress else None
            try:
                report = self.ingest(stored, wrap or (lambda items, total: items), access=groups)
            except ChatbotError as e:
                problems.append(f"- ingest failed: {e}")
            else:
                problems.extend(f"- {os.path.basename(p)}: {reason}" for p, reason in report.failed)
                status = f"**Ingested:** {report.summary()}"
                return (status + ("\n\n**Not ingested:**\n" + "\n".join(problems) if problems else ""),
                        self.documents(request), None)
        return "**Nothing ingested.**\n" + "\n".join(problems), self.documents(request), None

    # --- replay (owners) -----------------------------------------------------------------------------------

    def replay(self, calibration_file: str | None, floor: float | None, limit: float | None,
               since: str | None, request: Any = None) -> tuple[str, list[list[str]], list]:
        """Re-ask the stored questions under another calibration file and/or floor: (summary, the changes as
        table rows, the changes themselves for `replay_select`). For admins only, when there are users."""
        from chatbot.calibration import Calibration
        from chatbot.replay import changes_first, describe_setting, parse_since, replay

        pipeline = self.pipeline
        try:
            viewer = self.viewer_of(request)
            if viewer is not None and not viewer.admin:
                return "⚠️ Replay shows every user's questions: it is for admins.", [], []
            calibration = pipeline.calibration
            source = "the running calibration"
            if calibration_file:
                calibration = Calibration.load(calibration_file)
                calibration.check_fits(pipeline.fingerprints, Path(calibration_file).name)
                source = Path(calibration_file).name
            if floor is not None and floor == floor:  # an emptied number box gives None (or NaN)
                calibration = calibration.with_decision_floor(float(floor))
            since_s = parse_since(since)
            if pipeline.traces is None:
                return "Score traces are turned off (config key traces): there is nothing to replay.", [], []
            traces = pipeline.traces.replayable(since_s, int(limit) if limit else None)
            if not traces:
                return "No stored questions to replay" + (f" since {since}" if since else "") + ".", [], []
            replaying = pipeline.with_calibration(calibration)
            report = replay(replaying, traces, describe_setting(replaying, source),
                            viewer_of=self.users.viewer if self.users is not None else None)
        except ChatbotError as e:
            return f"⚠️ {e}", [], []
        changes = changes_first(report.replayed)
        return (present.replay_summary(report).replace("\n", "  \n")
                + ("\n\n*Click a row to see both inspection panels.*" if changes else ""),
                present.replay_rows(changes), changes)

    @staticmethod
    def replay_select(changes: list | None, evt: Any) -> tuple[str, list[list[str]], str, list[list[str]]]:
        """Both inspection panels of one replayed question: as it was answered, and under the new setting."""
        from chatbot.record import cited_chunks, gate_from_record

        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not changes or not 0 <= row < len(changes):
            return "", [], "", []
        r = changes[row]
        then = gate_from_record(r.record)
        return (present.floor_markdown(then, r.question, r.question), present.candidate_rows(then, cited_chunks(r.record)),
                present.floor_markdown(r.gate, r.question, r.question), present.candidate_rows(r.gate))

    # --- layout -------------------------------------------------------------------------------------------------

    def build(self):
        import gradio as gr

        with gr.Blocks(title="Grounded chatbot") as demo:
            session = gr.State(None)
            gr.Markdown("## Grounded chatbot\nAnswers only from your documents, with citations; says "
                        f"*\"{present.REFUSAL_TEXT}\"* when nothing clears the evidence floor.  \n"
                        f"<small>LLM: {self.llm_label}</small>")
            with gr.Tab("Chat"):
                with gr.Row():
                    with gr.Column(scale=5):
                        chat = gr.Chatbot(elem_id="chat", height=480, label="Chat",
                                          feedback_options=("Like", "Dislike"))
                        with gr.Row():
                            box = gr.Textbox(elem_id="question", placeholder="Ask about your documents…",
                                             show_label=False, scale=8, max_length=20000)
                            send = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
                        feedback_status = gr.Markdown(elem_id="feedback-status")
                    with gr.Column(scale=4):
                        gr.Markdown("### Inspection: the last answer")
                        floor = gr.Markdown(elem_id="panel-floor")
                        chart = gr.Image(label="p_relevant per candidate, floor dashed", elem_id="panel-chart",
                                         type="pil", interactive=False, buttons=[], height=250)
                        timings = gr.Markdown(elem_id="panel-timings")
                table = gr.Dataframe(headers=present.TABLE_HEADERS, interactive=False, wrap=True,
                                     elem_id="inspection-table", label="Candidate pool (click a row for its text)")
                chunk_text = gr.Markdown(elem_id="panel-chunk")
                with gr.Row():
                    chunk_up = gr.Button("👍 chunk is relevant", size="sm", elem_id="chunk-up")
                    chunk_down = gr.Button("👎 chunk is not relevant", size="sm", elem_id="chunk-down")
            with gr.Tab("Knowledge base"):
                files = gr.File(file_count="multiple", file_types=list(UPLOAD_SUFFIXES), label="Upload documents",
                                elem_id="upload")
                ingest_button = gr.Button("Add to knowledge base", variant="primary", elem_id="ingest")
                ingest_status = gr.Markdown(elem_id="ingest-status")
                upload_access = gr.Textbox(label="Who may read the uploads (groups, comma-separated; admins only: "
                                                 "others upload into their own groups)", value="",
                                           placeholder="everyone", elem_id="upload-access")
                docs = gr.Dataframe(headers=["document", "chunks", "readable by"], interactive=False,
                                    label="Indexed documents", elem_id="documents")

            if self.replay_tab:
                self._build_replay_tab(gr)

            outputs = [box, chat, session, floor, table, chart, timings, chunk_text]
            # One public API endpoint ("/ask", for gradio_client and scripts); Enter in the box is the same call.
            def respond(message, history, session_, request):
                yield from self.respond(message, history, session_, request)

            respond.__annotations__ = {"request": gr.Request}
            send.click(respond, [box, chat, session], outputs, concurrency_limit=4, concurrency_id="chat",
                       api_name="ask")
            box.submit(respond, [box, chat, session], outputs, concurrency_id="chat", api_visibility="private")
            # Gradio injects event data by the parameter's annotation, so it must be the real class.
            def on_select(session_, evt):
                return self.select_chunk(session_, evt)

            def on_like(session_, evt):
                return self.like_answer(session_, evt)

            on_select.__annotations__ = {"evt": gr.SelectData}
            on_like.__annotations__ = {"evt": gr.LikeData}
            table.select(on_select, [session], [chunk_text, session])
            chat.like(on_like, [session], [feedback_status])
            chunk_up.click(lambda s: self.rate_chunk(s, 1), [session], [feedback_status])
            chunk_down.click(lambda s: self.rate_chunk(s, -1), [session], [feedback_status])

            def upload(files_, access_, request, progress=gr.Progress()):
                return self.upload(files_, progress, request, access_)

            def documents(request):
                return self.documents(request)

            upload.__annotations__ = {"request": gr.Request}
            documents.__annotations__ = {"request": gr.Request}
            ingest_button.click(upload, [files, upload_access], [ingest_status, docs, files], concurrency_limit=1)
            demo.load(documents, None, [docs])
        return demo


    def _build_replay_tab(self, gr) -> None:
        with gr.Tab("Replay"):
            gr.Markdown("Re-ask the stored questions under another calibration or floor, and see which would flip "
                        "before you ship it. Nothing is stored and no LLM is called.")
            with gr.Row():
                calibration = gr.File(file_count="single", file_types=[".json"], type="filepath",
                                      label="Calibration file (empty: the running one)", elem_id="replay-calibration")
                with gr.Column():
                    floor = gr.Number(label="Floor (empty: the calibration's)", minimum=0.0, maximum=1.0,
                                      elem_id="replay-floor")
                    limit = gr.Number(label="Most recent questions", value=500, minimum=1, precision=0,
                                      elem_id="replay-limit")
                    since = gr.Textbox(label="Asked since (YYYY-MM-DD, optional)", elem_id="replay-since")
            run = gr.Button("Replay", variant="primary", elem_id="replay-run")
            summary = gr.Markdown(elem_id="replay-summary")
            flips = gr.Dataframe(headers=present.REPLAY_HEADERS, interactive=False, wrap=True, elem_id="replay-table",
                                 label="What would change (regressions first)")
            changes = gr.State([])
            with gr.Row():
                with gr.Column():
                    gr.Markdown("#### Then")
                    then_floor = gr.Markdown(elem_id="replay-then-floor")
                    then_table = gr.Dataframe(headers=present.TABLE_HEADERS, interactive=False, wrap=True,
                                              elem_id="replay-then-table")
                with gr.Column():
                    gr.Markdown("#### Now")
                    now_floor = gr.Markdown(elem_id="replay-now-floor")
                    now_table = gr.Dataframe(headers=present.TABLE_HEADERS, interactive=False, wrap=True,
                                             elem_id="replay-now-table")
            def run_replay(calibration_, floor_, limit_, since_, request):
                return self.replay(calibration_, floor_, limit_, since_, request)

            run_replay.__annotations__ = {"request": gr.Request}
            run.click(run_replay, [calibration, floor, limit, since], [summary, flips, changes], concurrency_limit=1)

            def on_select(changes_, evt):
                return self.replay_select(changes_, evt)

            on_select.__annotations__ = {"evt": gr.SelectData}
            flips.select(on_select, [changes], [then_floor, then_table, now_floor, now_table])


class SignInGate:
    """Refusals at the HTTP level. With a trusted header, before the app: a request without the header
    answers 401, one whose header did not come from the proxy, or names no user here, 403. With
    passwords, a failed sign-in answers 401 (Gradio's own /login says 400, a bad request, which a client
    or a monitoring rule cannot tell from a malformed form); its API answers 401 to anyone not signed in.
    Logged with the user's name and the client's address, never a password."""

    def __init__(self, app, chat: "ChatApp"):
        self.app = app
        self.chat = chat

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        # Gradio's own start-up check calls this one path from the server itself, with no proxy in between.
        if self.chat.trusted_header and not scope.get("path", "").endswith("/startup-events"):
            from types import SimpleNamespace

            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if not headers.get(self.chat.trusted_header):  # not signed in: the proxy sends everyone with a name
                return await _refuse(scope, send, 401, "sign in through the proxy")
            request = SimpleNamespace(client=SimpleNamespace(host=(scope.get("client") or ("",))[0]), headers=headers)
            try:
                self.chat.viewer_of(request)
            except AuthError as e:  # a name from elsewhere than the proxy, or of no user here
                return await _refuse(scope, send, 403, str(e))
        elif scope["type"] == "http" and scope.get("method") == "POST" and scope.get("path", "").rstrip("/").endswith("/login"):
            return await self.app(scope, receive, _failed_sign_in_as_401(send))
        elif scope["type"] == "http" and scope.get("method") == "GET" and not self.chat.trusted_header:
            return await self.app(scope, receive, _with_login_shim(send))
        return await self.app(scope, receive, send)


def _failed_sign_in_as_401(send):
    async def sending(message):
        if message["type"] == "http.response.start" and message["status"] == 400:
            message = {**message, "status": 401,
                       "headers": [*message.get("headers", []), (b"www-authenticate", b'Form realm="chatbot"')]}
        await send(message)

    return sending


def _with_login_shim(send):
    """Adds LOGIN_401_SHIM to the head of an HTML page (Gradio's own `head` is not on its sign-in page)."""
    start: dict | None = None
    body: list[bytes] = []

    async def sending(message):
        nonlocal start
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers", []))
            if not headers.get(b"content-type", b"").startswith(b"text/html") or b"content-encoding" in headers:
                return await send(message)
            start = message
            return None
        if start is None or message["type"] != "http.response.body":
            return await send(message)
        body.append(message.get("body", b""))
        if message.get("more_body"):
            return None
        html = b"".join(body).replace(b"</head>", LOGIN_401_SHIM.encode() + b"</head>", 1)
        headers = [(k, str(len(html)).encode() if k == b"content-length" else v) for k, v in start.get("headers", [])]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": html})

    return sending


# Gradio's sign-in page shows "Incorrect credentials" only for a 400; this page-side shim reads the 401
# that SignInGate sends as that same answer, so people see the message and clients get the right status.
LOGIN_401_SHIM = """<script>(() => {
  const fetch0 = window.fetch;
  window.fetch = async (...args) => {
    const response = await fetch0(...args);
    const url = String(args[0] && args[0].url || args[0]);
    if (response.status === 401 && /\\/login\\/?$/.test(new URL(url, location.href).pathname)) {
      return new Response(await response.text(), {status: 400, headers: response.headers});
    }
    return response;
  };
})();</script>"""


async def _refuse(scope, send, status: int, reason: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = f"{status} {reason}".encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def theme():
    import gradio as gr

    # System fonts only: the default theme would fetch web fonts, and the app must work offline.
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "Consolas", "monospace"])


class ExpiringTokens(dict):
    """Gradio's sign-in tokens (token -> user name), each forgotten `ttl_s` after it was issued: an expired
    session is no longer signed in (its API calls answer 401, its page shows the sign-in form again)."""

    def __init__(self, ttl_s: float):
        super().__init__()
        self.ttl_s = ttl_s
        self.issued: dict[str, float] = {}

    def __setitem__(self, token, user) -> None:
        self.issued[token] = time.monotonic()
        super().__setitem__(token, user)

    def get(self, token, default=None):
        issued = self.issued.get(token)
        if issued is not None and time.monotonic() - issued > self.ttl_s:
            LOG.info("session of %r expired", super().get(token))
            self.pop(token, None)
            self.issued.pop(token, None)
            return default
        return super().get(token, default)

    def __contains__(self, token) -> bool:
        return self.get(token) is not None


def launch(app: ChatApp, *, host: str = "127.0.0.1", port: int = 7860, auth: tuple[str, str] | None = None,
           block: bool = True, max_sessions: int = 500, session_hours: float = 12.0):
    """Start the server; returns the Blocks (and keeps running) when `block` is False. With users (and no
    trusted header), each person signs in with their own name and password.

    Gradio keeps every session's component values (chat, table, chart) in memory, by default for
    10,000 sessions: megabytes each, so a busy server would only grow. `max_sessions` bounds it."""
    from starlette.middleware import Middleware

    if app.users is not None and not app.trusted_header:
        auth = app.check_login
    demo = app.build()
    demo.queue(default_concurrency_limit=1)
    middleware = [Middleware(SignInGate, chat=app)] if app.users is not None else []
    demo.launch(server_name=host, server_port=port, auth=auth, max_file_size=app.upload_max_bytes,
                prevent_thread_lock=True, quiet=not block, ssr_mode=False, theme=theme(), css=CSS,
                footer_links=[], show_error=False, state_session_capacity=max_sessions,
                app_kwargs={"middleware": middleware})
    if auth is not None:  # before anyone signs in: sign-ins expire
        demo.server_app.tokens = ExpiringTokens(session_hours * 3600.0)
    if block:
        demo.block_thread()
    return demo
