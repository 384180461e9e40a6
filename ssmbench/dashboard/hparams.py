"""TensorBoard's HParams view of a selection of runs: which columns (the config keys that differ between the
runs, the usual choices, the run's status), their types and domains, and which final metrics.

The experiment (columns) and each run's session (its values) are TensorBoard summaries of the `hparams`
plugin (the protos of tensorboard.plugins.hparams, the same ones its own summary API writes).
"""

from __future__ import annotations

from dataclasses import dataclass

from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from ssmbench.compare.runs import Run
from ssmbench.compare.table import differing_keys, metric_columns

STATUS = "status"
# Shown whenever a run has them, even where all selected runs agree: what a reader of a sweep looks for first.
ALWAYS = ("model", "task", "seed", "optimizer.lr")


@dataclass
class HParams:
    """The HParams view of a selection: the experiment summary (the same for every run) and each run's values."""
    experiment: summary_pb2.Summary
    values: dict[str, dict]        # run name -> {hparam: bool | float | str}; None values are left out


def _kind(values: list) -> int:
    """The hparam data type that holds all the non-None `values`: bool, float64, else string."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return api_pb2.DATA_TYPE_BOOL
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return api_pb2.DATA_TYPE_FLOAT64
    return api_pb2.DATA_TYPE_STRING


def _as(kind: int, value):
    if value is None:
        return None
    if kind == api_pb2.DATA_TYPE_FLOAT64:
        return float(value)
    return value if kind == api_pb2.DATA_TYPE_BOOL else str(value)


def hparam_keys(runs: list[Run]) -> list[str]:
    """`status`, then the config keys that differ between `runs` (compare's differing_keys), then those of
    ALWAYS that some run has."""
    extra = [k for k in ALWAYS if any(r.value(k) is not None for r in runs)]
    return [STATUS, *differing_keys(runs, extra=extra)]


def hparam_info(name: str, values: list) -> api_pb2.HParamInfo:
    """A column: its type and domain (the distinct values, or the interval of the numbers) over `values`."""
    kind = _kind(values)
    present = [_as(kind, v) for v in values if v is not None]
    info = api_pb2.HParamInfo(name=name, display_name=name, type=kind, differs=len(set(present)) > 1)
    if kind == api_pb2.DATA_TYPE_FLOAT64 and present:
        info.domain_interval.min_value, info.domain_interval.max_value = min(present), max(present)
    elif kind != api_pb2.DATA_TYPE_FLOAT64:
        info.domain_discrete.extend(sorted(set(present)))
    return info


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary:
    value = summary_pb2.Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data),
                                      tensor=metadata.NULL_TENSOR)
    return summary_pb2.Summary(value=[value])


def hparams_of(runs: list[Run]) -> HParams:
    """The columns and metrics of the selection `runs` and each run's values (keyed by Run.name)."""
    keys = hparam_keys(runs)
    raw = {k: [r.value(k) for r in runs] for k in keys}
    infos = [hparam_info(k, raw[k]) for k in keys]
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m), display_name=m) for m in metric_columns(runs, None)]
    experiment = _summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(
        experiment=api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics)))
    values = {r.name: {info.name: v for info, column in zip(infos, raw.values())
                       if (v := _as(info.type, column[i])) is not None}
              for i, r in enumerate(runs)}
    return HParams(experiment=experiment, values=values)


def session_start(name: str, values: dict) -> summary_pb2.Summary:
    """The session of run `name` with its hparam `values` (one session per run, its own group)."""
    info = plugin_data_pb2.SessionStartInfo(group_name=name)
    for key, value in values.items():
        if isinstance(value, bool):
            info.hparams[key].bool_value = value
        elif isinstance(value, float):
            info.hparams[key].number_value = value
        else:
            info.hparams[key].string_value = value
    return _summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=info))
