"""The Gradio 6 UI layout: text/image/video-to-video tabs, live progress, result, history, system.

It looks like the CogVideoX demo: prompt and options on the left, the video, its downloads and
the seed on the right. Every event is wired to ``UIHandlers`` (see ``ui_handlers``), which go
through the same job store as the REST API; each is also a named gradio_client endpoint.
"""

from __future__ import annotations

import gradio as gr

from steadyframe.catalog import catalog
from steadyframe.postprocess.plan import ALLOWED_FACTORS
from steadyframe.presets import PRESETS
from steadyframe.server.context import ServerContext
from steadyframe.server.ui_estimate import ESTIMATE_HINT
from steadyframe.server.ui_handlers import DEFAULT_MODEL, OutputStaging, UIHandlers
from steadyframe.server.ui_models import build_models_tab
from steadyframe.server.ui_memory import MEMORY_CSS, MemoryTimeline, open_linked_job

UI_PATH = "/ui"
HISTORY_COLUMNS = ["job id", "mode", "status", "stage", "prompt", "created", "error id"]
PROCESS_COLUMNS = [
    "process",
    "node",
    "device",
    "pid",
    "state",
    "RSS MB",
    "VRAM alloc MB",
    "VRAM reserved MB",
    "jobs",
    "restarts",
    "loaded models",
]


def ui_css() -> str:
    return """
    #job-status .sf-card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 10px 12px; }
    #job-status .sf-bar { height: 8px; background: var(--neutral-200); border-radius: 4px; overflow: hidden; margin-top: 6px; }
    #job-status .sf-bar > div { height: 100%; background: var(--color-accent); }
    #job-status .sf-error { border-color: #dc2626; background: rgba(220, 38, 38, 0.08); }
    #job-status .sf-error-id { font-family: monospace; }
    #job-status .sf-muted { opacity: 0.75; font-size: 0.9em; }
    #models-progress .sf-card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 10px 12px; }
    #models-progress .sf-bar { height: 8px; background: var(--neutral-200); border-radius: 4px; overflow: hidden; margin-top: 6px; }
    #models-progress .sf-bar > div { height: 100%; background: var(--color-accent); }
    """ + MEMORY_CSS


def build_ui(ctx: ServerContext, staging: OutputStaging) -> gr.Blocks:
    """The Blocks app mounted at ``UI_PATH``."""
    settings = ctx.settings
    handlers = UIHandlers(ctx, staging)
    model_choices = [DEFAULT_MODEL, *catalog(settings)]
    # delete_cache: Gradio's own copies of results and uploads go after a day (checked hourly).
    with gr.Blocks(title="steadyframe", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        gr.Markdown(
            "# steadyframe\n"
            "Text-, image- and video-to-video with CogVideoX. Write a prompt, pick a tab, press **Generate**."
        )
        job_id = gr.State(None)
        my_jobs = gr.BrowserState([], storage_key="steadyframe-my-jobs")  # survives a page reload
        with gr.Tabs(selected="generate") as main_tabs:
            with gr.Tab("Generate", id="generate") as generate_tab:
                with gr.Row():
                    with gr.Column(scale=1):
                        prompt = gr.Textbox(
                            label="Prompt", lines=4, max_length=settings.max_prompt_chars, elem_id="prompt",
                            placeholder="A panda playing a guitar in a bamboo forest, cinematic lighting",
                        )  # fmt: skip
                        enhance_btn = gr.Button(
                            "✨ Enhance prompt", size="sm", visible=bool(settings.llm_base_url), elem_id="enhance"
                        )
                        negative = gr.Textbox(label="Negative prompt", lines=1, elem_id="negative")
                        with gr.Tabs():
                            with gr.Tab("Text to video", id="t2v"):
                                t2v_btn = gr.Button("Generate", variant="primary", elem_id="generate-t2v")
                            with gr.Tab("Image to video", id="i2v"):
                                image = gr.Image(
                                    label="Input image", type="filepath", sources=["upload"], elem_id="input-image"
                                )
                                i2v_btn = gr.Button("Generate", variant="primary", elem_id="generate-i2v")
                            with gr.Tab("Video to video", id="v2v"):
                                video_in = gr.Video(label="Input video", sources=["upload"], elem_id="input-video")
                                strength = gr.Slider(
                                    0.05, 1.0, value=0.8, step=0.05, label="Strength (how far from the input)"
                                )
                                v2v_btn = gr.Button("Generate", variant="primary", elem_id="generate-v2v")
                        estimate_line = gr.Markdown(ESTIMATE_HINT, elem_id="estimate")
                        with gr.Accordion("Options", open=False):
                            model = gr.Dropdown(
                                model_choices, value=DEFAULT_MODEL, label="Model", allow_custom_value=True,
                                info="a model from the catalog (see the Models tab)", elem_id="model",
                            )  # fmt: skip
                            preset = gr.Dropdown(list(PRESETS), value="balanced", label="Motion preset")
                            with gr.Row():
                                seed = gr.Number(-1, precision=0, label="Seed (-1 = random)", elem_id="seed")
                                steps = gr.Number(
                                    0, precision=0, minimum=0, maximum=200, label="Steps (0 = preset)", elem_id="steps"
                                )
                            with gr.Row():
                                # A browser sends an empty number as 0, so 0 means "default" (guidance 0 would turn CFG off).
                                guidance = gr.Number(
                                    0, minimum=0, maximum=30, label="Guidance (0 = preset)", elem_id="guidance"
                                )
                                frames = gr.Number(
                                    0,
                                    precision=0,
                                    minimum=0,
                                    maximum=1024,
                                    label="Frames (0 = model default)",
                                    elem_id="frames",
                                )
                            with gr.Row():
                                upscale = gr.Radio(list(ALLOWED_FACTORS), value=1, label="Upscale factor")
                                interpolate = gr.Radio(list(ALLOWED_FACTORS), value=1, label="Frame interpolation factor")
                            speed = gr.Radio(
                                ["exact", "fast", "fastest"], value="exact", elem_id="speed",
                                label="Speed (exact = bit-exact with diffusers; fast/fastest cache steps)",
                            )  # fmt: skip
                            fault = gr.Textbox(
                                label="Fault injection (tests only, JSON)", visible=settings.fault_injection,
                                placeholder='{"stage": "denoise", "kind": "error", "at_step": 1}', elem_id="fault",
                            )  # fmt: skip
                    with gr.Column(scale=1):
                        status = gr.HTML("<div class='sf-card sf-muted'>No job yet.</div>", elem_id="job-status")
                        video_out = gr.Video(
                            label="Video", interactive=False, autoplay=True, loop=True, elem_id="result-video"
                        )
                        with gr.Row():
                            mp4_btn = gr.DownloadButton("Download MP4", visible=False, elem_id="download-mp4")
                            gif_btn = gr.DownloadButton("Download GIF", visible=False, elem_id="download-gif")
                        seed_used = gr.Textbox(label="Seed used", interactive=False, elem_id="seed-used")
                        cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel")
            with gr.Tab("Queue & history", id="history") as history_tab:
                only_mine = gr.Checkbox(True, label="Only jobs started in this browser", elem_id="history-mine")
                history_table = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, elem_id="history-table")
                with gr.Row():
                    picked = gr.Dropdown([], label="Job", allow_custom_value=True, elem_id="history-job")
                    open_btn = gr.Button("Open", elem_id="history-open")
                    refresh_btn = gr.Button("Refresh", elem_id="history-refresh")
            build_models_tab(ctx)
            with gr.Tab("System", id="system") as system_tab:
                system_summary = gr.Markdown(elem_id="system-summary")
                process_table = gr.Dataframe(headers=PROCESS_COLUMNS, interactive=False, elem_id="process-table")
                models_json = gr.JSON(label="Models")
                system_refresh = gr.Button("Refresh", elem_id="system-refresh")
                timeline = MemoryTimeline(ctx)
                timeline.build()

        outputs = [job_id, status, video_out, mp4_btn, gif_btn, seed_used]
        options = [prompt, negative, model, preset, seed, steps, guidance, frames, upscale, interpolate, fault, speed]
        # The job store is the queue: Gradio must not serialise these waits behind each other.
        t2v_btn.click(handlers.generate_t2v, options, outputs, api_name="generate_t2v", concurrency_limit=None)
        i2v_btn.click(
            handlers.generate_i2v, [image, *options], outputs, api_name="generate_i2v", concurrency_limit=None
        )
        v2v_btn.click(
            handlers.generate_v2v,
            [video_in, strength, *options],
            outputs,
            api_name="generate_v2v",
            concurrency_limit=None,
        )
        estimate_inputs = [model, frames, upscale, interpolate]
        estimate_line_args = dict(fn=handlers.estimate, inputs=estimate_inputs, outputs=[estimate_line])
        for changed in estimate_inputs:
            changed.change(**estimate_line_args, api_name=False, show_progress="hidden")
        demo.load(**estimate_line_args, api_name="estimate", show_progress="hidden")
        cancel_btn.click(handlers.cancel, [job_id], [status], api_name="cancel", concurrency_limit=None)
        enhance_btn.click(handlers.enhance, [prompt], [prompt], api_name="enhance_prompt", concurrency_limit=None)

        job_id.change(handlers.remember, [job_id, my_jobs], [my_jobs], api_name=False, queue=False)
        history_inputs = [only_mine, my_jobs]
        refresh_btn.click(handlers.history, history_inputs, [history_table, picked], api_name="history")
        only_mine.change(handlers.history, history_inputs, [history_table, picked], api_name=False)
        history_table.select(handlers.pick_from_table, None, [picked], api_name=False)
        open_btn.click(lambda: gr.Tabs(selected="generate"), None, [main_tabs], api_name=False, queue=False).then(
            handlers.open_job, [picked], outputs, api_name="open_job", concurrency_limit=None
        )
        system_refresh.click(handlers.system, None, [process_table, system_summary, models_json], api_name="system")
        # Filled when their tab opens, not on page load: an update arriving while the user types in the
        # freshly opened Options accordion made Gradio re-render it and drop the typed value.
        history_tab.select(handlers.history, history_inputs, [history_table, picked], api_name=False)
        system_tab.select(handlers.system, None, [process_table, system_summary, models_json], api_name=False)
        timeline.wire(system_tab, other_tabs=[generate_tab, history_tab])
        demo.load(open_linked_job(handlers.follow, len(outputs)), None, outputs, api_name=False)  # ?job=ID links
    return demo
