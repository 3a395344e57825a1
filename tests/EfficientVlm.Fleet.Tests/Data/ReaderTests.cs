using EfficientVlm.Fleet.Tests.Infrastructure;
using EfficientVlm.Model.Data.Readers;

namespace EfficientVlm.Fleet.Tests.Data;

/// <summary>The readers parse unchanged excerpts of the real files (Fixtures/formats, see its README).</summary>
public sealed class ReaderTests : IDisposable
{
    private static string Fixture(string name) => TestPaths.FormatFixture(name);

    private readonly string _folder = Directory.CreateTempSubdirectory("fleet-readers-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    [Fact]
    public void Coco_captions_excerpt_skips_captions_of_images_it_does_not_list()
    {
        var result = CaptionReaders.ReadCoco(Fixture("captions_val2014.sample.json"), "/coco/val2014", requireImages: false);
        Assert.Equal(40, result.Items.Count);
        Assert.Equal(2, result.Items.Sum(i => i.Captions.Count)); // only 2 of the 40 captions have their image in the excerpt
        Assert.Equal(391895, result.Items[0].ImageId);
        Assert.Equal("/coco/val2014/COCO_val2014_000000391895.jpg", result.Items[0].ImagePath);
        Assert.Contains("38 captions refer to images not listed", Assert.Single(result.Warnings));
    }

    [Fact]
    public void Karpathy_files_with_and_without_cocoid_and_filepath()
    {
        var coco = CaptionReaders.ReadKarpathy(Fixture("dataset_coco.karpathy.first-record.json"), "/coco", "test", requireImages: false);
        var image = Assert.Single(coco.Items);
        Assert.Equal(391895, image.ImageId);
        Assert.Equal("/coco/val2014/COCO_val2014_000000391895.jpg", image.ImagePath);
        Assert.Equal(5, image.Captions.Count);
        Assert.Equal("A man with a red helmet on a small moped on a dirt road. ", image.Captions[0]); // raw, spacing kept
        Assert.Empty(CaptionReaders.ReadKarpathy(Fixture("dataset_coco.karpathy.first-record.json"), "/coco", "train", requireImages: false).Items);

        var flickr = CaptionReaders.ReadKarpathy(Fixture("dataset_flickr8k.karpathy.sample.json"), "/flickr", null, requireImages: false);
        Assert.Equal([0L, 1, 2, 3, 4], flickr.Items.Select(i => i.ImageId)); // no cocoid: imgid
        Assert.All(flickr.Items, i => Assert.Equal(5, i.Captions.Count));
    }

    [Fact]
    public void Xvlm_caption_files_per_caption_and_per_image()
    {
        var train = CaptionReaders.ReadXvlm(Fixture("coco_karpathy_train.first-record.json"), "/coco", requireImages: false);
        var one = Assert.Single(train.Items);
        Assert.Equal(522418, one.ImageId);
        Assert.Equal("/coco/val2014/COCO_val2014_000000522418.jpg", one.ImagePath);

        var test = CaptionReaders.ReadXvlm(Fixture("coco_test.sample.json"), "/coco", requireImages: false);
        Assert.Equal(40, test.Items.Count);
        Assert.Equal(200, test.Items.Sum(i => i.Captions.Count));
        Assert.Equal(391895, test.Items[0].ImageId); // parsed from the file name
    }

    [Fact]
    public void Vqav2_questions_and_annotations_excerpt()
    {
        var result = VqaReaders.ReadVqaV2(Fixture("v2_OpenEnded_mscoco_val2014_questions.sample.json"),
            Fixture("v2_mscoco_val2014_annotations.sample.json"), "/coco", requireImages: false);
        Assert.Equal(40, result.Items.Count);
        var first = result.Items[0];
        Assert.Equal((262148000L, 262148L, "Where is he looking?"), (first.QuestionId, first.ImageId, first.Question));
        Assert.Equal(10, first.Answers.Count);
        Assert.Equal(("down", "none of the above", "other"), (first.MultipleChoiceAnswer, first.QuestionType, first.AnswerType));
        Assert.Equal("/coco/COCO_val2014_000000262148.jpg", first.ImagePath);
        Assert.Empty(result.Warnings);
    }

    [Fact]
    public void Vqav2_annotations_stripped_to_question_id_and_answers_are_accepted()
    {
        // as in allennlp's test fixtures: no question_type, multiple_choice_answer, answer_type or image_id
        var questions = Path.Combine(_folder, "q.json");
        var annotations = Path.Combine(_folder, "a.json");
        File.WriteAllText(questions, """{"data_subtype": "train2014", "questions": [{"image_id": 458752, "question": "What is this?", "question_id": 458752000}]}""");
        File.WriteAllText(annotations, """{"annotations": [{"question_id": 458752000, "answers": [{"answer": "net", "answer_confidence": "maybe", "answer_id": 1}]}]}""");
        var item = Assert.Single(VqaReaders.ReadVqaV2(questions, annotations, "/coco", requireImages: false).Items);
        Assert.Equal(["net"], item.Answers);
        Assert.Null(item.QuestionType);
    }

    [Fact]
    public void Xvlm_vqa_files_with_lists_single_strings_and_no_answers()
    {
        var val = VqaReaders.ReadXvlm(Fixture("vqa_val.schema-example.json"), "/coco", requireImages: false);
        Assert.Equal(10, val.Items[0].Answers.Count);
        Assert.Equal(262148, val.Items[0].ImageId);
        var test = VqaReaders.ReadXvlm(Fixture("vqa_test.schema-example.json"), "/coco", requireImages: false);
        Assert.All(test.Items, i => Assert.Empty(i.Answers));
        var vg = VqaReaders.ReadXvlm(Fixture("vg_qa.schema-example.json"), "/vg", requireImages: false);
        Assert.Equal(["sky"], vg.Items[0].Answers);
    }

    [Fact]
    public void Nlvr2_jsonl_excerpt_finds_images_from_the_identifier_and_ignores_other_fields()
    {
        var result = NlvrReaders.ReadJsonl(Fixture("dev.sample.jsonl"), "/nlvr2/images", requireImages: false);
        Assert.Equal(40, result.Items.Count);
        Assert.Equal(22, result.Items.Count(i => i.Label));
        var first = result.Items[0];
        Assert.Equal("dev-850-0-0", first.Identifier);
        Assert.Equal("/nlvr2/images/dev/dev-850-0-img0.png", first.LeftImage);
        Assert.Equal("/nlvr2/images/dev/dev-850-0-img1.png", first.RightImage);

        var xvlm = NlvrReaders.ReadXvlm(Fixture("nlvr_dev.schema-example.json"), "/nlvr2/images", requireImages: false);
        Assert.Equal(3, xvlm.Items.Count);
        Assert.Equal("/nlvr2/images/dev/dev-850-0-img1.png", xvlm.Items[0].RightImage);
        Assert.False(xvlm.Items[0].Label);
    }

    [Fact]
    public void Nlvr2_train_images_in_numbered_directories_are_found()
    {
        var root = Path.Combine(_folder, "images");
        Directory.CreateDirectory(Path.Combine(root, "train", "17"));
        File.WriteAllBytes(Path.Combine(root, "train", "17", "train-5-1-img0.png"), [1]);
        File.WriteAllBytes(Path.Combine(root, "train", "17", "train-5-1-img1.png"), [1]);
        var file = Path.Combine(_folder, "train.json");
        File.WriteAllText(file, """{"identifier": "train-5-1-0", "sentence": "s", "label": "True", "directory": 17, "writer": "3"}""" + "\n");
        var item = Assert.Single(NlvrReaders.ReadJsonl(file, root).Items);
        Assert.EndsWith(Path.Combine("train", "17", "train-5-1-img1.png"), item.RightImage);
    }

    [Fact]
    public void Missing_or_malformed_fields_name_the_file_and_the_record()
    {
        var coco = Path.Combine(_folder, "captions.json");
        File.WriteAllText(coco, """{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "id": 5, "caption": "x"}, {"image_id": 1, "id": 6}]}""");
        var e = Assert.Throws<DatasetFormatException>(() => CaptionReaders.ReadCoco(coco, "/", requireImages: false));
        Assert.Contains(coco, e.Message);
        Assert.Contains("annotations[1]", e.Message);
        Assert.Contains("'caption'", e.Message);

        var jsonl = Path.Combine(_folder, "dev.json");
        File.WriteAllText(jsonl, """{"identifier": "dev-1-0-0", "sentence": "s", "label": "True"}""" + "\n" + """{"identifier": "dev-2-0-0", "sentence": "s", "label": "maybe"}""" + "\n");
        var n = Assert.Throws<DatasetFormatException>(() => NlvrReaders.ReadJsonl(jsonl, "/", requireImages: false));
        Assert.Contains("line 2", n.Message);
        Assert.Contains("maybe", n.Message);

        var broken = Path.Combine(_folder, "broken.json");
        File.WriteAllText(broken, """{"questions": [""");
        Assert.Contains("not valid JSON", Assert.Throws<DatasetFormatException>(() => VqaReaders.ReadVqaV2(broken, null, "/")).Message);

        var typed = Path.Combine(_folder, "typed.json");
        File.WriteAllText(typed, """{"data_subtype": "val", "questions": [{"image_id": "12", "question": "q", "question_id": 1}]}""");
        Assert.Contains("'image_id' should be a number but is a string", Assert.Throws<DatasetFormatException>(() => VqaReaders.ReadVqaV2(typed, null, "/", requireImages: false)).Message);

        var missingImage = Assert.Throws<DatasetFormatException>(() => CaptionReaders.ReadXvlm(Fixture("coco_test.sample.json"), _folder));
        Assert.Contains("image not found", missingImage.Message);
    }
}
