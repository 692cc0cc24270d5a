"""Raw data to shards: `engine` (plan -> shards -> manifest), `workers` (the process pool and the results it
hands back), `state` (the `.avdata/` folder a rerun, parts and merge share), `merge`, `protocol`,
`lifeline` (workers never outlive the run), `lock` (one run per output folder; --part runs share it)."""
