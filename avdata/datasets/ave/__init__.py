"""AVE, the Audio-Visual Event dataset (Tian et al., ECCV 2018), as one package:

- `annotations`: the text lists (`Annotations.txt`, `trainSet.txt`, `valSet.txt`, `testSet.txt`) and the
  28 category names, whose sorted order is the class order;
- `recipe`: `avdata prepare ave` (frames + spectrogram shards with the official splits);
- `audio_track`: the spectrogram of an MP4's own AAC track;
- `sources`: `avdata download ave --mirror URL` (`DOWNLOADS`; the official copy is on Google Drive, see there);
- `synth`: real-format H.264/AAC MP4s with B-frames and the lists, for tests and demos.
"""
