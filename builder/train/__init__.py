"""The training stage: a composed config -> data, task, optimiser, loggers, Lightning Trainer -> a run directory.

    check          the config checked without torch (a typo fails in about a second)
    run            train(cfg): one run, from config checks to result.yaml (imports torch and Lightning)
    tasks, data    what is learnt from what (registered by name)
    optim          optimiser and schedule
    rundir, resume, resume_state, safety, progress, metrics_csv, loggers, attention_callback
                   a run's files and dashboards
    init_from, adapters   a run that starts from another model's weights, with LoRA adapters or without
    evaluate       a trained model's validation metrics (builder-eval)
    distributed    several processes (DDP, FSDP, nodes)
    sweep          multiruns checked before they start, summarised at the end
"""