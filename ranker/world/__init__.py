"""The synthetic world with ground truth, its features, and the traffic simulator.

Owns: users with latent interests and items whose true click, like and dwell
probabilities come from that ground truth (:mod:`.ground_truth`), the user and item
features the towers read (:mod:`.features`), and simulated users who request feeds and
click with their true probabilities (:mod:`.simulate`). Imports nothing else of ranker.
"""
