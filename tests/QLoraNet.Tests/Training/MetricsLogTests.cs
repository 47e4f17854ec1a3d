using QLoraNet.Training.Trainer;

namespace QLoraNet.Tests.Training;

/// <summary>metrics.csv as a resume reads it: bounded and validated like every reader of a file from disk (issue 11).</summary>
[Trait("tier", "unit")]
public class MetricsLogTests
{
    const string Header = "step,epoch,loss,val_loss,learning_rate,grad_norm,tokens,tokens_per_s,step_s,elapsed_s,host_rss_mb";
    static string Row(int step, string loss = "2.5") => $"{step},0.1,{loss},,0.001,0.5,100,50,2,{2 * step},300";

    static string Error(TempDir tmp, string content)
    {
        File.WriteAllText(tmp["metrics.csv"], content);
        return OneLineError.Of(tmp["metrics.csv"], () => MetricsLog.Read(tmp["metrics.csv"]));
    }

    [Fact]
    public void What_this_trainer_writes_reads_back_and_older_runs_column_name_is_accepted()
    {
        using var tmp = Paths.Temp();
        var log = new MetricsLog(tmp["metrics.csv"], 0);
        log.Append(new MetricsLog.Row(1, 0.1, 2.5, null, 1e-3, 0.5, 100, 50, 2, 2, 300));
        log.Append(new MetricsLog.Row(2, 0.2, 2.4, 2.6, 1e-3, 0.5, 100, 50, 2, 4, 300));
        var rows = MetricsLog.Read(tmp["metrics.csv"]);
        Assert.Equal([1, 2], rows.Select(r => r.Step));
        Assert.Equal(2.6, rows[1].ValidationLoss);
        Assert.Equal([1], MetricsLog.Read(tmp["metrics.csv"], throughStep: 1).Select(r => r.Step));

        File.WriteAllText(tmp["old.csv"], Header.Replace("host_rss_mb", "memory_mb") + "\n" + Row(1) + "\n");
        Assert.Equal(300, MetricsLog.Read(tmp["old.csv"]).Single().HostRssMb);
    }

    /// <summary>Task columns are named after the tasks, whose names may hold commas and quotes: the header is RFC 4180
    /// (such names quoted, read back by any CSV reader with every row as wide as the header) and a resume reads the
    /// same names back.</summary>
    [Fact]
    public void Task_columns_whose_names_hold_commas_or_quotes_are_quoted_and_read_back()
    {
        using var tmp = Paths.Temp();
        var log = new MetricsLog(tmp["metrics.csv"], 0);
        string comma = TaskEvaluation.Column("qa, hard", "acc,none"), quote = TaskEvaluation.Column("say \"hi\"", "exact_match,strict-match");
        Assert.Equal(["qa, hard/acc", "say \"hi\"/exact_match_(strict-match)"], new[] { comma, quote });
        log.Append(new MetricsLog.Row(1, 0.1, 2.5, null, 1e-3, 0.5, 100, 50, 2, 2, 300));
        log.Append(new MetricsLog.Row(2, 0.2, 2.4, 2.6, 1e-3, 0.5, 100, 50, 2, 4, 300,
            TaskScores: new Dictionary<string, double> { [comma] = 0.25, [quote] = 0.5 }));

        string header = File.ReadLines(tmp["metrics.csv"]).First();
        Assert.EndsWith(",\"qa, hard/acc\",\"say \"\"hi\"\"/exact_match_(strict-match)\"", header);
        using (var csv = CsvHelper.CsvReader.FromFile(tmp["metrics.csv"], new CsvHelper.CsvReaderOptions { HasHeader = true }))
        {
            Assert.Equal(MetricsLog.Header.Concat([comma, quote]), csv.Headers);
            int rows = 0;
            while (csv.Read())
            {
                Assert.Equal(MetricsLog.Header.Count + 2, csv.FieldCount);
                rows++;
            }
            Assert.Equal(2, rows);
        }
        var read = MetricsLog.Read(tmp["metrics.csv"]);
        Assert.Null(read[0].TaskScores);
        Assert.Equal(new Dictionary<string, double> { [comma] = 0.25, [quote] = 0.5 }, read[1].TaskScores);
        Assert.Equal(2, new MetricsLog(tmp["metrics.csv"], 2).Rows[1].TaskScores!.Count); // a resume keeps them
    }

    [Fact]
    public void A_line_break_in_a_task_name_cannot_split_the_header()
    {
        Assert.Equal("two_lines/acc", TaskEvaluation.Column("two\nlines", "acc"));
        Assert.Equal("tab_bed/acc", TaskEvaluation.Column("tab\tbed", "acc,none"));
    }

    [Fact]
    public void A_row_cut_off_by_a_kill_during_an_append_is_dropped()
    {
        using var tmp = Paths.Temp();
        File.WriteAllText(tmp["metrics.csv"], $"{Header}\r\n{Row(1)}\r\n{Row(2)}\r\n3,0.1,2.");
        Assert.Equal([1, 2], MetricsLog.Read(tmp["metrics.csv"]).Select(r => r.Step));
        // Resuming from step 2 keeps rows 1-2 and rewrites the file whole.
        var log = new MetricsLog(tmp["metrics.csv"], 2);
        Assert.Equal(2, log.Rows.Count);
        Assert.EndsWith("\n", File.ReadAllText(tmp["metrics.csv"]));
    }

    [Fact]
    public void Damaged_files_are_one_line_errors_naming_the_line_and_the_column()
    {
        using var tmp = Paths.Temp();
        Assert.Contains(":3: 'loss' is 'abc', not a finite number", Error(tmp, $"{Header}\n{Row(1)}\n{Row(2, "abc")}\n"));
        Assert.Contains(":2: 'loss' is 'NaN', not a finite number", Error(tmp, $"{Header}\n{Row(1, "NaN")}\n"));
        Assert.Contains(":3: step 1 does not follow step 1", Error(tmp, $"{Header}\n{Row(1)}\n{Row(1)}\n"));
        Assert.Contains(":2: 3 fields, the header names 11", Error(tmp, $"{Header}\n1,2,3\n"));
        Assert.Contains(":1: header has no 'step' column", Error(tmp, "a,b\n1,2\n"));
        // Binary garbage: refused by line, nothing of it echoed raw.
        var garbage = new byte[5000];
        new Random(3).NextBytes(garbage);
        File.WriteAllBytes(tmp["metrics.csv"], garbage);
        var e = Assert.Throws<InvalidDataException>(() => MetricsLog.Read(tmp["metrics.csv"]));
        Assert.False(e.Message.Any(char.IsControl), e.Message);
        Assert.True(e.Message.Length < 400, e.Message);
    }

    [Fact]
    public void An_endless_line_a_huge_file_and_a_fifo_are_refused_without_reading_them_whole()
    {
        using var tmp = Paths.Temp();
        Assert.Contains($"line longer than {MetricsLog.MaxLineBytes} bytes", Error(tmp, Header + "\n" + new string('1', 100_000)));
        using (var f = File.Create(tmp["huge.csv"])) f.SetLength(MetricsLog.MaxBytes + 1);   // sparse: no disk used
        Assert.Contains("limit for a metrics file", Assert.Throws<InvalidDataException>(() => MetricsLog.Read(tmp["huge.csv"])).Message);
        if (OperatingSystem.IsWindows()) return;
        using (var p = System.Diagnostics.Process.Start("mkfifo", tmp["fifo.csv"])) p.WaitForExit();
        var error = Bounded.Within(TimeSpan.FromSeconds(30), "reading a FIFO metrics.csv blocked",
            () => Assert.ThrowsAny<Exception>(() => MetricsLog.Read(tmp["fifo.csv"])));
        Assert.Contains("FIFO", error.Message);
    }
}
