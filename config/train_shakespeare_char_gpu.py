# nanoGPT's "baby GPT" recipe for a GPU: 10.7M parameters (nanoGPT reports val loss 1.4697 on an A100).
# python train.py config/train_shakespeare_char_gpu.py
# Measured on one NVIDIA H100 (PyTorch 2.11, bf16 autocast): 5,000 iterations in 2 min 42 s. The best
# val loss, 1.4605, came at iteration 1,750 (62 s in); the model then overfits (1.7156 at 5,000), and
# only the best checkpoint is kept.
ckpt_path = "out/shakespeare_char_gpu.pt"
device = "cuda"
dtype = "bfloat16"
n_layer = 6
n_head = 6
n_embd = 384
block_size = 256
dropout = 0.2
batch_size = 64
max_iters = 5000
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 100
eval_interval = 250
eval_iters = 200
log_interval = 10
