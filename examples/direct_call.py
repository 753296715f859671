"""Call the RIFT losses directly on logits, labels and rewards (no framework needed).

Run: python examples/direct_call.py
"""

import torch

import rift_losses

torch.manual_seed(0)
B, T, V = 4, 16, 32
logits = torch.randn(B, T, V, requires_grad=True)
labels = torch.randint(0, V, (B, T))
labels[:, :4] = -100  # prompt tokens are not targets
correct = [True, True, False, False]  # a verifier's verdict per response
rewards = rift_losses.constant_rewards(correct)  # +1.0 / -0.2, the paper's scheme

loss, stats = rift_losses.rift_loss(logits, labels, rewards, return_stats=True)
loss.backward()
print(f"rewards       {rewards.tolist()}")
print(f"RIFT loss     {loss.item():.4f}  (positive part {stats.pos_loss.item():.4f}, ", end="")
print(f"negative part {stats.neg_loss.item():.4f})")
print(f"naive loss    {rift_losses.naive_loss(logits, labels, rewards).item():.4f}")
print(f"tokens        {int(stats.pos_tokens)} positive, {int(stats.neg_tokens)} negative; ", end="")
print(f"mean p of negative tokens {stats.neg_prob_mean.item():.4f}")

# Hugging Face causal-LM labels (labels == input_ids, masked) are shifted explicitly:
hf_labels = torch.randint(0, V, (B, T))
ce_like = rift_losses.rift_loss(logits, rift_losses.shift_labels(hf_labels), torch.ones(B))
print(f"shifted CE-like RIFT with all rewards 1: {ce_like.item():.4f}")

# Group-normalized rewards (eq. 6-8): responses of the same problem share a group id.
groups = torch.tensor([0, 0, 1, 1])
for method in rift_losses.NORMALIZATIONS:
    normalized = rift_losses.normalize_rewards(torch.tensor([1.0, -0.2, 1.0, 1.0]), groups, method=method)
    print(f"{method:<11}   {normalized.tolist()}")
