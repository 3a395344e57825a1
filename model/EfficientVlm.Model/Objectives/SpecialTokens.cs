namespace EfficientVlm.Model.Objectives;

/// <summary>Ids of the special word pieces (from the vocabulary: BERT's are 0, 100, 101, 102, 103).</summary>
public sealed record SpecialTokens(long Pad, long Unk, long Cls, long Sep, long Mask, long VocabSize);
