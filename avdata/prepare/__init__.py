"""Raw data to shards: `engine` (plan -> shards -> manifest), `workers` (the process pool and the results it
hands back), `state` (the `.avdata/` folder a rerun, parts and merge share), `merge`, `protocol`,
`lifeline` (workers never outlive the run; stops held while a file must be whole). The output folder's
lock is `avdata.folder_lock`."""
