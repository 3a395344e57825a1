namespace EfficientVlm.Model.Data.Readers;

/// <summary>One image with its captions (COCO captions, Karpathy, X-VLM caption files all map to this).</summary>
public sealed record CaptionImage(long ImageId, string ImagePath, IReadOnlyList<string> Captions);

/// <summary>One VQA question (VQAv2 and X-VLM VQA files map to this). Answers: the annotators' raw answers (empty for test).</summary>
public sealed record VqaItem(long QuestionId, long ImageId, string ImagePath, string Question, IReadOnlyList<string> Answers,
    string? MultipleChoiceAnswer = null, string? QuestionType = null, string? AnswerType = null);

/// <summary>One NLVR2 statement over a pair of images.</summary>
public sealed record NlvrItem(string Identifier, string Sentence, bool Label, string LeftImage, string RightImage);

/// <summary>What a reader read, and what it skipped (for example captions of images the file does not list).</summary>
public sealed record ReadResult<T>(IReadOnlyList<T> Items, IReadOnlyList<string> Warnings);

/// <summary>A file in one of the supported formats has a missing or malformed field; the message names the file and the record.</summary>
public sealed class DatasetFormatException(string message, Exception? inner = null) : Exception(message, inner);
