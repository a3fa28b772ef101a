"""The serving stage: a trained model from a checkpoint, an export or a Hugging Face directory, used from Python.

    checkpoint     finding and loading checkpoints safely, exporting
    api            builder.load and the loaded-model classes (predict), input checks
    lm, translation, generation   text generation and translation (greedy, sampling, beam search, KV cache)
    hf_gpt2        Hugging Face GPT-2 directories
"""
