"""The semi-PD paper's evaluation, reproduced with the simulator: experiments are Hydra
configs (conf/experiment/fig*.yaml); this package runs them (`suite`) and turns their run
directories into figures and REPORT.md (`report`)."""
