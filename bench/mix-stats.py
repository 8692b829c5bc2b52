#!/usr/bin/env python3
"""How many distinct switch mixes per-example k-NN Auto-Switch gives on the 8 tasks' test texts (docs/bench-mixed.md):
base embeddings from transformers (mean pooling, 128 tokens), cosine k = 10 over packs/queries.safetensors."""
import json, numpy as np, torch, collections
from safetensors.numpy import load_file
from transformers import AutoTokenizer, AutoModel
torch.set_num_threads(2)
base = __import__('subprocess').check_output(['scripts/model-path']).decode().strip()
q = load_file('packs/queries.safetensors'); F = q['features']; F = F/np.linalg.norm(F,axis=1,keepdims=True); L=q['labels']
tok = AutoTokenizer.from_pretrained(base); m = AutoModel.from_pretrained(base).eval()
tasks = ['code-lang','deb-section','fortune','lang-id','man-section','unicode-cat','wn-noun','wn-verb']
texts=[]
for t in tasks:
    texts += [json.loads(l)['text'] for l in open(f'data/tasks/{t}/test.jsonl')]
E=[]
with torch.no_grad():
    for i in range(0,len(texts),64):
        b=tok(texts[i:i+64],padding=True,truncation=True,max_length=128,return_tensors='pt')
        h=m(**b).last_hidden_state; a=b['attention_mask'].unsqueeze(-1).float()
        E.append(((h*a).sum(1)/a.sum(1)).numpy())
E=np.concatenate(E); E/=np.linalg.norm(E,axis=1,keepdims=True)
S=E@F.T; nn=np.argsort(-S,axis=1)[:,:10]
mixes=[tuple(np.bincount(L[r],minlength=8)) for r in nn]
c=collections.Counter(mixes)
print('texts',len(texts),'distinct',len(c))
sizes=sorted(c.values(),reverse=True); print('largest', sizes[:12])
pure=sum(v for k,v in c.items() if max(k)==10); print('pure', pure)
single=sum(1 for v in c.values() if v==1); print('singleton groups', single)
for th in (2,5,10,30): print(f'texts in groups >= {th}:', sum(v for v in c.values() if v>=th))
