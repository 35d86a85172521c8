"""The two-tower model: network, training, export, serving towers, catalog index, engine.

Owns: ``TwoTowerModel`` and the model directory (:mod:`.network`, :mod:`.artifacts`),
``ranker train`` (:mod:`.train`), the ONNX export (:mod:`.export`), the scoring backends
(:mod:`.towers`, onnxruntime or torch), the item index for large catalogs
(:mod:`.catalog_index`) and the scoring engine (:mod:`.engine`: one user-tower pass, one
matrix-vector product, a partial sort). No HTTP. May import ``world``.
"""
