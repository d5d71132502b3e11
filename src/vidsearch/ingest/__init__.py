"""`vidsearch ingest`: video files → keyframes → features → the feature store, in one job, on one machine or on Ray.

The stages are described once (`vidsearch.ingest.stages`) and run by one of two executors:

    plan        (driver)   find the files; which need keyframes, which are cached already, which the store holds
    keyframes   (CPU)      each file decoded in an isolated child process (`vidsearch.video.workers`): a decoder
                           that crashes, hangs or passes its limits fails that file with its error code, never the job
    encode      (GPU/CPU)  each video's rows (whole video or moments) through the model, in batches
    publish     (driver)   the single store writer: every `batch_videos` encoded videos become one store version

`vidsearch.ingest.local` runs them on this machine (a process per core for keyframes, the model in the driver);
`vidsearch.ingest.raydata` as a Ray Data pipeline (tasks for keyframes, an actor pool for the model, on one node or
several; the driver alone writes the keyframe cache and the store), imported only when a Ray address is given. A job that is killed leaves every version it published; running it again does only
what is missing (videos the store lacks; keyframes only for files that are new, changed or failed before).
"""
