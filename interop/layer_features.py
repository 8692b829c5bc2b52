"""Independent reference for routers on base layers (`tswitch route --build --layers`): transformers' mean-pooled
hidden states of those layers, each block at unit length, concatenated, x 1/sqrt(number of layers), and the routes
`tswitch route ROUTER FEATURES` gives them."""
import numpy as np
from safetensors.numpy import save_file
from transformers import AutoModel, AutoTokenizer

from serve_process import model_path


def layer_features(torch, texts, layers, max_length):
    """One row per text (each embedded alone, so no padding), `len(layers) x hidden` features."""
    tok = AutoTokenizer.from_pretrained(model_path())
    model = AutoModel.from_pretrained(model_path()).eval()
    rows = []
    with torch.no_grad():
        for s in texts:
            hs = model(**tok([s], truncation=True, max_length=max_length, return_tensors="pt"),
                       output_hidden_states=True).hidden_states
            blocks = [hs[l][0].mean(0).numpy() for l in layers]
            rows.append(np.concatenate([b / np.linalg.norm(b) for b in blocks]) / np.sqrt(len(layers)))
    return np.stack(rows).astype(np.float32)


def routed(tswitch, router, features, path):
    """The destination `tswitch route` prints for each feature row (a task name, or base's own label)."""
    save_file({"features": features}, str(path))
    names = []
    for line in tswitch("route", router, path).stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[0].isdigit():
            names.append(parts[1].split(" ")[0])
    return names
