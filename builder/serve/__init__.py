"""The serving stage: a trained model from a checkpoint, an export or a Hugging Face directory, used from Python.

    checkpoint     finding and loading checkpoints safely, exporting
    api            builder.load and the loaded-model classes (predict), input checks
    lm, translation, generation   text generation and translation (greedy, sampling, beam search, KV cache)
    hf, hf_table   Hugging Face directories of the families in conf/hf (GPT-2, Llama, Mistral, Qwen2, Phi-3), in
                   and out
"""
