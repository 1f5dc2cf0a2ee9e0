"""target-ssl: engine, the parts every training loop shares.

Submodules are imported explicitly (``from engine.checkpoint import CheckpointManager``); nothing is
imported here so ``import engine`` stays cheap. The loop skeleton the pieces are designed for::

    info = init_distributed(cfg.run.device)
    seed_everything(cfg.run.seed, info.rank)
    precision = resolve_precision(cfg.run.precision, info.device)
    model = wrap_ddp(build_model().to(info.device), info)
    opt = build_adamw(unwrap_model(model), cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.betas,
                      cfg.optim.layer_decay, prefix="backbone.body.encoder")
    sched = schedule_from_config(cfg.optim, total_steps)
    scaler = make_grad_scaler(precision, info.device)
    sampler = ResumableSampler(len(ds), seed=cfg.run.seed)          # same seed on every rank
    loader = DataLoader(ds, batch_size, sampler=sampler, drop_last=True,
                        generator=sampler.loader_generator)        # keeps the global RNG untouched
    ckpt = CheckpointManager(cfg.run.output_dir, cfg.run.keep_last)
    step, epoch, batch0 = 0, 0, 0
    if (path := find_resume_checkpoint(cfg.run.resume, cfg.run.output_dir)) is not None:
        st = load_checkpoint(path, allow_pickle=cfg.run.allow_pickle)
        unwrap_model(model).load_state_dict(st["model"]); opt.load_state_dict(st["optimizer"])
        scaler.load_state_dict(st["scaler"]); sampler.load_state_dict(st["sampler"])
        step, epoch, batch0 = st["step"], st["epoch"], st["sampler"]["start_index"] // batch_size
        restore_rng_state(st["rng"])                               # last, after all RNG consumers
    while step < total_steps:
        if batch0 == 0:
            sampler.set_epoch(epoch)
        for i, batch in enumerate(loader, start=batch0):
            set_lr(opt, cfg.optim.lr, sched(step))
            with autocast(precision, info.device):
                loss = model(batch)["loss"]
            check_finite(loss, step, on_fail=lambda: ckpt.save_named(state(), "nonfinite"))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt); clip_grad(model.parameters(), cfg.optim.clip_grad)
            scaler.step(opt); scaler.update(); step += 1
            if step % cfg.run.ckpt_every_steps == 0:
                rng = all_gather_object(capture_rng_state())       # every rank takes part
                ckpt.save({"model": ..., "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                           "step": step, "epoch": epoch, "rng": rng,
                           "sampler": sampler.state_dict(i + 1, batch_size),
                           "config": config_to_dict(cfg)}, step)    # writes on rank 0 only
        epoch, batch0 = epoch + 1, 0

Mid-epoch resume is bit-exact with ``num_workers=0``; with worker processes the data order is
still exact but per-sample augmentation randomness restarts from the epoch's worker seeds.
"""
