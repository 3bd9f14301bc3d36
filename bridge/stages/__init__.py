"""The stages and their plan: every stage declared once (`plan`), the one runner (`runner`), what a stage reads and
hands on (`context`, `artifacts`), stage results and the overall-status rule (`result`), and the stage
implementations: the native route (`route_native`), the ONNX route (`route_onnx`), the TensorFlow stages
(`tensorflow`), TF.js in Node (`node`) and in Chromium (`browser`)."""
