"""One module per DVC stage: what the stage does, given params.yaml and its paths. The scripts in stages/
read nothing but the task name and call one function here, so each stage depends on exactly the code it runs."""
