"""TensorBoard: event files in each run dir (``<run dir>/tensorboard/``), so a sweep dir is a
TensorBoard folder of its runs: ``tensorboard --logdir outputs/multirun/<sweep>``.

Per run: every scalar of ``metrics.json`` at step 0, every series at its step, the figures as
images, the config and the run's tags as text, and the flattened config as hparams (the
HParams tab compares the runs of a sweep), with the run's status. The sweep report's text and
figures go to ``<sweep dir>/tensorboard/``. Event files are written into a temp folder and
renamed into place, like every file of a run dir.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

from driftbench.fileio import publish
from driftbench.trackers.base import RunRecord, SweepRecord, Tracker

PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> channels (grey, RGB, grey+A, RGBA)


def png_summary(tag: str, path: Path):
    """An image summary holding the PNG file's own bytes (no re-encoding)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    data = path.read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    image = Summary.Image(
        height=height,
        width=width,
        colorspace=PNG_CHANNELS.get(data[25], 4),
        encoded_image_string=data,
    )
    return Summary(value=[Summary.Value(tag=tag, image=image)])


def hparams_summaries(params: dict, completed: bool) -> list:
    """The HParams plugin's session start (the parameters) and end (the status) for one run.
    No experiment summary: TensorBoard infers one from the sessions of all runs it shows."""
    from google.protobuf import struct_pb2
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo()
    for key, value in params.items():
        if isinstance(value, bool):
            start.hparams[key].CopyFrom(struct_pb2.Value(bool_value=value))
        elif isinstance(value, (int, float)):
            start.hparams[key].CopyFrom(struct_pb2.Value(number_value=float(value)))
        else:
            start.hparams[key].CopyFrom(struct_pb2.Value(string_value=str(value)))
    status = api_pb2.STATUS_SUCCESS if completed else api_pb2.STATUS_FAILURE
    contents = {
        metadata.SESSION_START_INFO_TAG: plugin_data_pb2.HParamsPluginData(
            session_start_info=start
        ),
        metadata.SESSION_END_INFO_TAG: plugin_data_pb2.HParamsPluginData(
            session_end_info=plugin_data_pb2.SessionEndInfo(status=status)
        ),
    }
    out = []
    for tag, content in contents.items():
        content.version = metadata.PLUGIN_DATA_VERSION
        plugin = SummaryMetadata.PluginData(
            plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString()
        )
        value = Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))
        out.append(Summary(value=[value]))
    return out


def as_code(text: str) -> str:
    """Markdown code block (TensorBoard's text tab renders markdown)."""
    return "\n".join("    " + line for line in text.splitlines())


class TensorboardTracker(Tracker):
    name = "tensorboard"
    extra = "tensorboard"
    module = "tensorboard"

    def _write(self, folder: Path, fill: Callable) -> None:
        """``fill(writer)`` into a fresh temp folder beside ``folder``, renamed into place."""
        from torch.utils.tensorboard import SummaryWriter

        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
        try:
            writer = SummaryWriter(log_dir=str(tmp))
            try:
                fill(writer)
            finally:
                writer.close()
            publish(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def open_sweep(self, sweep: SweepRecord) -> None:
        """Nothing to set up: the sweep dir is the group, each job's events are in its run dir."""

    def log_run(self, run: RunRecord) -> None:
        def fill(writer) -> None:
            tags = "\n".join(f"- {k}: `{v}`" for k, v in run.tags.items())
            writer.add_text("run", tags + (f"\n- error: `{run.error}`" if run.error else ""))
            writer.add_text("config", as_code((run.dir / "config.yaml").read_text()))
            for name, value in run.scalars.items():
                writer.add_scalar(name, value, 0)
            steps = run.steps()
            for step, row in steps.items():
                for name, value in row.items():
                    writer.add_scalar(name, value, step)
            last = max(steps, default=0)
            for fig in run.figures:
                writer.file_writer.add_summary(png_summary(f"figures/{fig.stem}", fig), last)
            for summary in hparams_summaries(run.params, run.completed):
                writer.file_writer.add_summary(summary)

        self._write(run.dir / self.settings["subdir"], fill)

    def close_sweep(self, sweep: SweepRecord) -> None:
        def fill(writer) -> None:
            report = sweep.dir / "report.md"
            if report.is_file():
                writer.add_text("report", report.read_text())
            for fig in sweep.figures:
                writer.file_writer.add_summary(png_summary(f"figures/{fig.stem}", fig), 0)

        self._write(sweep.dir / self.settings["subdir"], fill)
