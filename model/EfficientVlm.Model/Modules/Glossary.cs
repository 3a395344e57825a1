namespace EfficientVlm.Model.Modules;

// Shape letters used in the comments of this folder (README.md has the same table):
//   B batch, T text tokens, N image tokens (patches + class token), S attention source length,
//   D hidden width, nh heads kept in the layer, hs head size (D / configured heads),
//   F FFN width kept in the layer, V vocabulary, C channels, H/W image height/width, K candidates.
//
// Field names of the modules are state-dict keys (TorchSharp RegisterComponents); they are the
// checkpoint contract and are named in snake_case on purpose. Checkpoints/ReferenceImporter.cs maps
// them to the X-VLM / EfficientVLM reference names.
