namespace QLoraNet.Distributed;

/// <summary>
/// Watches the rendezvous connections of a backend that carries its data elsewhere (NCCL): nothing is sent on them
/// after the rendezvous except one goodbye byte when a rank closes its communicator normally, so the end of a
/// stream without a goodbye means that peer's process died. NCCL itself would only notice a dead peer on the same
/// host by its timeout (its kernels wait in GPU memory for data that never comes).
/// </summary>
internal sealed class PeerWatch : IDisposable
{
    const byte Goodbye = 0x42;

    readonly PeerLinks _links;
    readonly CancellationTokenSource _stop = new();
    readonly bool[] _left;
    volatile int _died = -1;

    public PeerWatch(PeerLinks links)
    {
        _links = links;
        _left = new bool[links.WorldSize];
        foreach (int peer in links.Peers) _ = Watch(peer);
    }

    /// <summary>A peer whose connection ended without a goodbye (its process exited), or null.</summary>
    public int? Died => _died >= 0 ? _died : null;

    /// <summary>A peer that closed its communicator normally (it has done its last collective), or null.</summary>
    public int? Left => Array.IndexOf(_left, true) is var i && i >= 0 ? i : null;

    async Task Watch(int peer)
    {
        var one = new byte[1];
        try
        {
            int n = await _links.Stream(peer).ReadAsync(one, _stop.Token).ConfigureAwait(false);
            if (n == 1 && one[0] == Goodbye)
            {
                _left[peer] = true;
                return;
            }
        }
        catch (Exception) when (_stop.IsCancellationRequested) { return; }
        catch (Exception) { }
        if (!_stop.IsCancellationRequested) _died = peer;
    }

    /// <summary>Stops watching; with <paramref name="goodbye"/>, tells the peers this rank closed normally.</summary>
    public void Close(bool goodbye)
    {
        if (_stop.IsCancellationRequested) return;
        _stop.Cancel();
        if (goodbye)
            foreach (int peer in _links.Peers)
                try { _links.Stream(peer).Write([Goodbye]); } catch (Exception) { }
    }

    public void Dispose()
    {
        Close(goodbye: false);
        _stop.Dispose();
    }
}
