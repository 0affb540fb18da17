"""Data: the benchmark on disk, from the registry of datasets to the pixels a request carries.

    datasets.py     the registry of MAD-Bench's 6 datasets / 31 subsets, the layout, discovery of your own
    templates.py    template and result CSVs (`Path,Severity[,Anomaly Score]`)
    references.py   which normal images go into a prompt
    images.py       image preparation exactly as the reference scripts do, and image identity (sha256)
    corruptions.py  deterministic ImageNet-C style corruptions (robustness, RQ6)
    filememo.py     a memo of file hashes, so reruns cost a `stat` per image
    synth.py        the offline demo dataset `synth`
    fetch.py        the published dataset from the Hugging Face hub
"""
