"""The training stage: a composed config -> data, task, optimiser, loggers, Lightning Trainer -> a run directory.

    run            train(cfg): one run, from config checks to result.yaml
    tasks, data    what is learnt from what (registered by name)
    optim          optimiser and schedule
    rundir, resume, safety, progress, metrics_csv, loggers, attention_callback   a run's files and dashboards
    distributed    several processes (DDP, FSDP, nodes)
    sweep          multiruns checked before they start, summarised at the end
"""
from builder.train.run import train

__all__ = ["train"]
